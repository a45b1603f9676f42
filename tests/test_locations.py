"""A ``postgresql://`` URL where a file path used to be (issue 19): never made absolute, checked
for existence or given a directory, and its password never printed, logged or put on a command
line. Most of these need no server: an unreachable one gives the same messages."""

from __future__ import annotations

import io
import os
import socket
import sys

import pytest
from conftest import cli_runner

from prismq_queue import Unsupported
from prismq_queue._location import for_opening, is_url, shown
from prismq_queue.cli import main
from prismq_queue.maintenance import Maintenance, Schedule

SECRET = "s3cr3tPW"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dead_url():
    """A URL with a password whose server is not there (the connection is refused at once)."""
    return f"postgresql://app:{SECRET}@127.0.0.1:{closed_port()}/db?schema=app&connect_timeout=2"


@pytest.fixture
def live_url(postgres_url):
    """The test server's URL with a password added (the throwaway cluster trusts, ignoring it)."""
    if "@" not in postgres_url.split("://", 1)[1].split("/", 1)[0]:
        pytest.skip("the server's URL names no user to give a password to")
    if ":" in postgres_url.split("://", 1)[1].split("@", 1)[0]:
        return postgres_url  # it has one already
    return postgres_url.replace("@", f":{SECRET}@", 1)


def test_is_url_and_shown_without_password():
    assert is_url("postgresql://h/db") and is_url("POSTGRES://h/db") and not is_url("queue.db")
    assert not is_url("postgresql.db") and not is_url(os.path.join("x", "postgresql:", "y"))
    assert shown("postgresql://app:pw@h:5432/db?schema=jobs") == "postgresql://app@h:5432/db?schema=jobs"
    assert shown("postgresql://app:p@ss@h/db") == "postgresql://app@h/db"
    assert shown("postgres:///db?host=/run/pg&password=hunter2&x=1") == "postgres:///db?host=/run/pg&x=1"
    assert shown("postgresql://h/db?password=hunter2") == "postgresql://h/db"
    assert shown("postgresql://app@h/db") == "postgresql://app@h/db"
    assert shown("queue.db") == "queue.db" and shown("queue.db", absolute=True) == os.path.abspath("queue.db")
    url = "postgresql://app:pw@h/db"
    assert for_opening(url) == url and for_opening("q.db") == os.path.abspath("q.db")


def test_cli_errors_never_show_the_password(dead_url, tmp_path):
    for args in (["stats"], ["backup", str(tmp_path / "b.db")], ["vacuum"], ["list"]):
        r = cli_runner().invoke(main, [*args, "--db", dead_url])
        assert r.exit_code != 0, (args, r.output)
        assert SECRET not in r.output, (args, r.output)
        assert "does not exist" not in r.output, (args, r.output)  # no file check of a URL
    assert not any(p.name.startswith("postgresql") for p in tmp_path.iterdir())


def test_import_legacy_into_a_url_does_not_compare_files(dead_url, tmp_path):
    old = tmp_path / "old.db"
    old.write_bytes(b"")
    r = cli_runner().invoke(main, ["import-legacy", str(old), "--db", dead_url])
    assert r.exit_code != 0 and SECRET not in r.output and "is OLD.db itself" not in r.output, r.output


def test_serve_puts_the_password_in_no_command_line_and_no_banner(dead_url):
    from prismq_queue import serve

    opts = serve.ServeOptions(db=dead_url, handlers=["worker_handlers"])
    argv = serve.worker_argv(opts, "w-1")
    assert SECRET not in " ".join(argv) and "--db" not in argv
    assert serve.worker_env(opts)["PRISMQ_DB"] == dead_url
    assert serve.worker_env(serve.ServeOptions(db="q.db")) is None
    assert serve.worker_argv(serve.ServeOptions(db="q.db"), "w")[serve.worker_argv(
        serve.ServeOptions(db="q.db"), "w").index("--db") + 1] == "q.db"
    said: list[str] = []
    opts.echo = said.append
    serve._print_banner(opts, dead_url, 8000, None, ["h"], ["t"])
    assert said[0] == f"prismq-queue serve: database {shown(dead_url)}" and SECRET not in "\n".join(said)


def test_serve_check_database_keeps_the_url_and_hides_the_password(dead_url, live_url):
    from prismq_queue import serve

    with pytest.raises(Exception) as e:
        serve.check_database(dead_url)
    assert SECRET not in str(e.value)
    assert serve.check_database(live_url) == live_url  # not made absolute: the workers open it


def test_worker_banner_hides_the_password(dead_url, monkeypatch):
    from prismq_queue.cli import running

    class Settings:
        db = dead_url
        queues = None
        concurrency = 2
        handlers = ["h"]
        shutdown_grace = 5.0

    class W:
        worker_id = "w-1"

    class R:
        @staticmethod
        def get_registered_types():
            return {"t"}

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    running._worker_banner(W(), Settings(), R(), one_line=False)
    text = err.getvalue()
    assert f"on {shown(dead_url)}" in text and SECRET not in text


def test_backup_and_vacuum_of_a_url_say_what_to_use_instead(live_url, tmp_path):
    for args, instead in ((["backup", str(tmp_path / "b.db")], "pg_dump"), (["vacuum"], "autovacuum")):
        r = cli_runner().invoke(main, [*args, "--db", live_url])
        assert r.exit_code != 0 and instead in r.output and SECRET not in r.output, r.output
    assert not (tmp_path / "b.db").exists()


def test_maintenance_schedules_no_checkpoint_on_postgres(live_url):
    from prismq_queue import Queue

    with Queue(live_url) as q:
        assert SECRET not in q.path
        m = Maintenance(q, Schedule())
        assert "checkpoint" not in m._next and "checkpoint check off" in m.describe()
        with pytest.raises(Unsupported):
            q.checkpoint()


def test_restore_into_a_url_is_unsupported_without_the_password(dead_url, tmp_path):
    from prismq_queue import Queue

    with Queue(str(tmp_path / "src.db")) as q:
        q.backup(str(tmp_path / "b.db"))
    with pytest.raises(Unsupported) as e:
        Queue.restore(str(tmp_path / "b.db"), dead_url)
    assert e.value.operation == "restore" and "pg_restore" in str(e.value) and SECRET not in str(e.value)
    r = cli_runner().invoke(main, ["restore", str(tmp_path / "b.db"), "--db", dead_url])
    assert r.exit_code != 0 and "pg_restore" in r.output and SECRET not in r.output, r.output


def test_queue_path_and_repr_of_a_url_hold_no_password(live_url):
    from prismq_queue import Queue, QueueError

    q = Queue(live_url)
    assert q.path == shown(live_url) and SECRET not in repr(q)
    q.close()
    with pytest.raises(QueueError) as e:
        q.stats()
    assert SECRET not in str(e.value)


@pytest.mark.timeout(240)
def test_serve_on_postgres_runs_workers_without_showing_the_password(live_url, tmp_path):
    from serve_helpers import Serve, wait_until

    from prismq_queue import Queue

    s = Serve(tmp_path, "--db", live_url, "--port", 0, "--workers", 1).start()
    try:
        with Queue(live_url) as q:
            wait_until(lambda: q.stats(queue="demo")["completed"] >= 2, timeout=90, what="demo tasks completing")
            [w] = [w for w in q.workers() if w.pid and w.pid != s.proc.pid]
            # The worker's command line, where the platform shows it without a dependency (Linux's
            # /proc; Windows has no such file): the URL reaches workers through PRISMQ_DB instead.
            if os.path.exists(f"/proc/{w.pid}/cmdline"):
                with open(f"/proc/{w.pid}/cmdline", "rb") as f:
                    assert SECRET.encode() not in f.read()
            else:
                assert sys.platform != "linux", "no /proc on Linux"
        assert f"database {shown(live_url)}" in s.out.text()
    finally:
        s.close()
    assert SECRET not in s.output(), s.output()
    assert not any(tmp_path.iterdir()), list(tmp_path.iterdir())  # no file made for a URL


def test_no_postgres_server_fails_where_required_and_skips_elsewhere(monkeypatch):
    import pg_cluster

    monkeypatch.setenv("PRISMQ_REQUIRE_POSTGRES", "1")
    with pytest.raises(pytest.fail.Exception, match="apt-get install postgresql"):
        pg_cluster.give_up(pg_cluster.HOW_TO_INSTALL)
    monkeypatch.delenv("PRISMQ_REQUIRE_POSTGRES")
    with pytest.raises(pytest.skip.Exception, match="apt-get install postgresql"):
        pg_cluster.give_up(pg_cluster.HOW_TO_INSTALL)
    assert pg_cluster.with_schema("postgresql://h/db").startswith("postgresql://h/db?schema=t_")
    assert "&schema=t_" in pg_cluster.with_schema("postgresql://h/db?connect_timeout=5")
