"""TaskHandlerRegistry: the behaviour existing code relies on, the decorator, config files."""

from __future__ import annotations

import json
import threading
import time

import pytest

from prismq_queue import (
    HandlerAlreadyRegistered,
    HandlerNotFound,
    InvalidArgument,
    Queue,
    QueueError,
    TaskHandlerRegistry,
    Worker,
)


def handler_a(ctx):
    return "a"


def handler_b(ctx):
    return "b"


def test_register_get_and_info():
    reg = TaskHandlerRegistry()
    reg.register_handler("email.send", handler_a, description="send mail", version="2.1.0")
    assert reg.get_handler("email.send") is handler_a
    assert reg.is_registered("email.send") and not reg.is_registered("other")
    assert reg.get_registered_types() == {"email.send"}
    info = reg.get_handler_info("email.send")
    assert info["task_type"] == "email.send" and info["description"] == "send mail" and info["version"] == "2.1.0"
    assert info["handler"] == "handler_a" and info["module"] == __name__


@pytest.mark.parametrize("bad_type", ["", "   ", None, 3])
def test_empty_or_non_string_type_is_a_value_error(bad_type):
    reg = TaskHandlerRegistry()
    with pytest.raises(ValueError, match="task_type must be a non-empty string"):
        reg.register_handler(bad_type, handler_a)
    assert reg.get_registered_types() == set()


def test_non_callable_handler_is_a_value_error():
    reg = TaskHandlerRegistry()
    with pytest.raises(ValueError, match="must be callable"):
        reg.register_handler("x", "not a function")
    assert not reg.is_registered("x")


def test_duplicate_needs_allow_override():
    reg = TaskHandlerRegistry()
    reg.register_handler("x", handler_a)
    with pytest.raises(HandlerAlreadyRegistered, match="allow_override=True") as e:
        reg.register_handler("x", handler_b)
    assert isinstance(e.value, QueueError)
    assert reg.get_handler("x") is handler_a
    reg.register_handler("x", handler_b, allow_override=True)
    assert reg.get_handler("x") is handler_b


def test_missing_handler_has_its_own_error_that_is_a_key_error():
    reg = TaskHandlerRegistry()
    with pytest.raises(HandlerNotFound, match="no handler is registered for task type 'nope'"):
        reg.get_handler("nope")
    with pytest.raises(KeyError):
        reg.get_handler_info("nope")


def test_unregister_and_clear():
    reg = TaskHandlerRegistry()
    reg.register_handler("a", handler_a)
    reg.register_handler("b", handler_b)
    assert reg.unregister_handler("a") is True
    assert reg.unregister_handler("a") is False
    assert reg.get_registered_types() == {"b"}
    reg.clear()
    assert reg.get_registered_types() == set() and len(reg) == 0


def test_decorator_form_registers_and_returns_the_function():
    reg = TaskHandlerRegistry()

    @reg.handler("report.build", version="3.0.0")
    def build(ctx):
        """Build the monthly report."""
        return 1

    assert build(None) == 1
    assert reg.get_handler("report.build") is build
    assert reg.get_handler_info("report.build")["description"] == "Build the monthly report."


def test_registration_is_thread_safe():
    reg = TaskHandlerRegistry()
    errors = []

    def register(k):
        try:
            for i in range(200):
                reg.register_handler(f"t{k}-{i}", handler_a)
                reg.get_registered_types()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=register, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(reg.get_registered_types()) == 8 * 200


HANDLER_FILES = {
    "handlers.json": json.dumps(
        {"handlers": {"echo": {"module": "worker_handlers", "function": "echo", "description": "echo it"}}}
    ),
    "handlers.toml": '[handlers.echo]\nmodule = "worker_handlers"\nfunction = "echo"\ndescription = "echo it"\n',
    "handlers.yaml": "handlers:\n  echo:\n    module: worker_handlers\n    function: echo\n    description: echo it\n",
}


@pytest.mark.parametrize("name", sorted(HANDLER_FILES))
def test_handlers_from_a_config_file(tmp_path, name):
    import worker_handlers

    path = tmp_path / name
    path.write_text(HANDLER_FILES[name])
    reg = TaskHandlerRegistry.from_config(path)
    assert reg.get_handler("echo") is worker_handlers.echo
    assert reg.get_handler_info("echo")["description"] == "echo it"


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"handlers": {"echo": {"module": "no_such_module_xyz", "function": "f"}}}', "cannot import module"),
        ('{"handlers": {"echo": {"module": "worker_handlers", "function": "missing"}}}', "has no attribute"),
        ('{"handlers": {"echo": {"module": "worker_handlers"}}}', "needs 'module' and 'function'"),
        ('{"handlers": {"echo": {"module": "m", "function": "f", "colour": 1}}}', "unknown keys"),
        ('{"nothing": 1}', "expected a 'handlers' table"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_handler_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "h.json"
    path.write_text(content)
    with pytest.raises(InvalidArgument, match=message):
        TaskHandlerRegistry.from_config(path)


def test_unknown_file_format_is_refused(tmp_path):
    path = tmp_path / "h.ini"
    path.write_text("[handlers]")
    with pytest.raises(InvalidArgument, match="use .json, .toml, .yaml"):
        TaskHandlerRegistry.from_config(path)


def test_worker_runs_a_registry_registered_with_the_decorator(tmp_path):
    reg = TaskHandlerRegistry()

    @reg.handler("double")
    def double(ctx):
        return ctx.payload * 2

    with Queue(tmp_path / "r.db") as q:
        tid = q.enqueue("double", 21)
        other = q.enqueue("not.mine", 1)
        w = Worker(q, reg, poll_interval=0.05)
        t = threading.Thread(target=w.run, kwargs={"install_signal_handlers": False})
        t.start()
        try:
            deadline = time.monotonic() + 10
            while q.get(tid).status != "completed" and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            w.stop()
            t.join(10)
        assert q.get(tid).result == 42
        assert q.get(other).status == "queued" and q.get(other).attempts == 0
