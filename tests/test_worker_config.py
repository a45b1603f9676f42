"""Worker settings: each file format, PRISMQ_WORKER_* overrides, and every invalid value."""

from __future__ import annotations

import json

import pytest

from prismq_queue import InvalidArgument, Queue, TaskHandlerRegistry, Worker, WorkerSettings

FULL = {
    "db": "jobs.db",
    "worker_id": "w-7",
    "queues": ["default", "emails"],
    "strategy": "fifo",
    "concurrency": 8,
    "lease": 30.0,
    "poll_interval": 0.5,
    "capabilities": {"gpu": True, "region": "eu"},
    "handlers": ["worker_handlers:REGISTRY"],
    "shutdown_grace": 12.0,
    "busy_timeout": 5.0,
}

FILES = {
    "w.json": json.dumps({"worker": FULL}),
    "w.toml": """
[worker]
db = "jobs.db"
worker_id = "w-7"
queues = ["default", "emails"]
strategy = "fifo"
concurrency = 8
lease = 30.0
poll_interval = 0.5
capabilities = { gpu = true, region = "eu" }
handlers = ["worker_handlers:REGISTRY"]
shutdown_grace = 12.0
busy_timeout = 5.0
""",
    "w.yaml": """
db: jobs.db
worker_id: w-7
queues: [default, emails]
strategy: fifo
concurrency: 8
lease: 30.0
poll_interval: 0.5
capabilities: {gpu: true, region: eu}
handlers: ["worker_handlers:REGISTRY"]
shutdown_grace: 12.0
busy_timeout: 5.0
""",
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_each_format_gives_the_same_settings(tmp_path, name):
    path = tmp_path / name
    path.write_text(FILES[name])
    s = WorkerSettings.load(path, env={})
    assert s.model_dump(exclude={"heartbeat_interval"}) == FULL


def test_defaults():
    s = WorkerSettings.load(env={})
    assert (s.db, s.strategy, s.concurrency, s.lease, s.poll_interval, s.queues, s.capabilities) == (
        "prismq_queue.db", "priority", 5, 60.0, 1.0, None, None
    )


def test_environment_overrides_the_file_and_arguments_override_both(tmp_path):
    path = tmp_path / "w.toml"
    path.write_text(FILES["w.toml"])
    env = {
        "PRISMQ_WORKER_CONCURRENCY": "3",
        "PRISMQ_WORKER_QUEUES": "a, b",
        "PRISMQ_WORKER_CAPABILITIES": "gpu=false,vram_gb=24,zone=eu-1",
        "PRISMQ_WORKER_STRATEGY": "lifo",
        "UNRELATED": "x",
    }
    s = WorkerSettings.load(path, env=env)
    assert s.concurrency == 3 and s.queues == ["a", "b"] and s.strategy == "lifo"
    assert s.capabilities == {"gpu": False, "vram_gb": 24, "zone": "eu-1"}
    assert s.lease == 30.0  # untouched by the environment
    s = WorkerSettings.load(path, env=env, concurrency=11, strategy=None)
    assert s.concurrency == 11 and s.strategy == "lifo"  # None means "not given"


def test_json_values_in_the_environment(tmp_path):
    env = {"PRISMQ_WORKER_QUEUES": '["x", "y"]', "PRISMQ_WORKER_CAPABILITIES": '{"gpu": true}'}
    s = WorkerSettings.load(env=env)
    assert s.queues == ["x", "y"] and s.capabilities == {"gpu": True}


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("strategy", "random", "'fifo', 'lifo', 'priority' or 'weighted_random'"),
        ("concurrency", "0", "greater than or equal to 1"),
        ("concurrency", "many", "valid integer"),
        ("lease", "0", "greater than 0"),
        ("lease", "-5", "greater than 0"),
        ("poll_interval", "0", "greater than 0"),
        ("shutdown_grace", "-1", "greater than or equal to 0"),
        ("busy_timeout", "0", "greater than 0"),
        ("busy_timeout", "1e9", "less than or equal to 86400"),
        ("queues", ",", "at least one non-empty queue name"),
        ("capabilities", "gpu", "must look like key=value"),
        ("handlers", "just_a_module", "'package.module:registry' or a handlers file"),
    ],
)
def test_each_invalid_value_names_the_key_and_the_source(key, value, expected):
    env_name = f"PRISMQ_WORKER_{key.upper()}"
    with pytest.raises(InvalidArgument) as e:
        WorkerSettings.load(env={env_name: value})
    msg = str(e.value)
    assert f"worker setting {key!r}" in msg and env_name in msg and expected in msg, msg


def test_an_invalid_value_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"concurrency": -2}))
    with pytest.raises(InvalidArgument, match=r"worker setting 'concurrency' \(from .*w\.json\)"):
        WorkerSettings.load(path, env={})


def test_an_unknown_key_is_refused_with_the_allowed_ones(tmp_path):
    path = tmp_path / "w.toml"
    path.write_text("concurency = 4\n")
    with pytest.raises(InvalidArgument, match="unknown worker setting 'concurency'.*allowed settings: db,"):
        WorkerSettings.load(path, env={})


def test_broken_files_are_refused(tmp_path):
    path = tmp_path / "w.toml"
    path.write_text("concurrency = \n")
    with pytest.raises(InvalidArgument, match="not valid TOML"):
        WorkerSettings.load(path, env={})
    with pytest.raises(InvalidArgument, match="cannot read"):
        WorkerSettings.load(tmp_path / "missing.toml", env={})


def test_settings_build_a_working_worker(tmp_path):
    import worker_handlers

    handlers_file = tmp_path / "h.toml"
    handlers_file.write_text('[handlers.shout]\nmodule = "string"\nfunction = "capwords"\n')
    s = WorkerSettings.load(
        env={"PRISMQ_WORKER_HANDLERS": f"worker_handlers:REGISTRY,{handlers_file}", "PRISMQ_WORKER_WORKER_ID": "cfg"}
    )
    reg = s.make_registry()
    assert isinstance(reg, TaskHandlerRegistry)
    assert reg.get_handler("echo") is worker_handlers.echo
    assert reg.is_registered("shout")
    with Queue(tmp_path / "c.db") as q:
        w = Worker(q, reg, **s.worker_kwargs())
        assert (w.worker_id, w.concurrency, w.strategy) == ("cfg", 5, "priority")


def test_no_handlers_is_a_clear_error():
    with pytest.raises(InvalidArgument, match="no handlers"):
        WorkerSettings.load(env={}).make_registry()
