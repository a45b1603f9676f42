"""The command line on PostgreSQL (issue 19): ``worker`` and ``serve`` as real processes on a
throwaway schema, every read and admin command answering as it does on SQLite, and the commands
only SQLite has refusing with ``Unsupported``, saying what to use instead, with no traceback and
no password. The server: PRISMQ_TEST_POSTGRES_URL or a throwaway cluster (conftest.postgres_server).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import httpx
import pytest
from serve_helpers import CTRL_BREAK_UNDER_WINE, Serve, env, wait_until
from test_legacy_import import make_legacy
from wine import UNDER_WINE
from worker_cli_helpers import WorkerCLI

from prismq_queue import Queue

pytestmark = pytest.mark.timeout(240)

BACKENDS = ["sqlite", "postgres"]
PASSWORD = "s3cret-pw"


def with_password(url: str) -> str:
    """``url`` with a password in it: a server that trusts the tests' user ignores it, and no
    output of any command may show it."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@", 1)


@pytest.fixture(params=BACKENDS)
def queue_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "cli.db")
    return with_password(request.getfixturevalue("postgres_url"))


def cli(*args, cwd=None, timeout=120, extra_env=None):
    """``python -m prismq_queue ARGS`` as a process of its own: (exit code, stdout, stderr)."""
    p = subprocess.run(
        [sys.executable, "-m", "prismq_queue", *map(str, args)],
        cwd=cwd,
        env={**env(), **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    for stream in (p.stdout, p.stderr):
        assert "Traceback" not in stream, stream
        assert PASSWORD not in stream, stream
    return p.returncode, p.stdout, p.stderr


# Times and ages differ from run to run (and between the two databases); ids, counts, statuses,
# errors and log lines must not.
_TIMES = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?( UTC|[+-]\d\d:\d\d|Z)?")
_AGES = re.compile(r"\d+\.\d+s\b")
_JSON_AGES = re.compile(r'("\w*age\w*": )-?[0-9.e+-]+')


def same_everywhere(text: str) -> str:
    return _JSON_AGES.sub(r'\1"<age>"', _AGES.sub("<age>", _TIMES.sub("<time>", text)))


def fill(url: str) -> dict[str, int]:
    """The same tasks in the same states on either backend, through the Python API."""
    with Queue(url) as q:
        ids = {
            name: q.enqueue("t", {"n": i}, queue="mail" if name == "mail" else "default", max_attempts=1)
            for i, name in enumerate(["done", "dead", "queued", "mail", "to_cancel"])
        }
        [done] = q.claim("w1", types=["t"], queues=["default"])
        assert done.id == ids["done"]
        q.complete(done, {"ok": True})
        [dead] = q.claim("w1", types=["t"], queues=["default"])
        q.fail(dead, "ValueError: boom", retry=True)  # the only attempt: the dead letter
        q.log(ids["queued"], "warning", "a line of its own")
        q.heartbeat("w1", {"gpu": 1}, queues=["default"], host="h1", pid=4242, tasks_done=2)
    return ids


def answers(url: str, cwd) -> dict[str, tuple[int, str, str]]:
    """Each read and admin command's answer (exit code, stdout, stderr), as it shows in a terminal
    and as JSON, with what differs by nature (times, ages) masked."""
    ids = fill(url)
    runs = {
        "stats": ["stats"],
        "stats --json": ["stats", "--json"],
        "stats mail": ["stats", "--queue", "mail"],
        "list": ["list"],
        "list --json": ["list", "--json"],
        "list failed": ["list", "--status", "failed"],
        "list paged": ["list", "--after-id", ids["dead"], "--limit", 2],
        "show dead": ["show", ids["dead"]],
        "show dead --json": ["show", ids["dead"], "--json"],
        "show queued": ["show", ids["queued"]],
        "show missing": ["show", 999],
        "workers": ["workers"],
        "workers --json": ["workers", "--json"],
        "retry queued": ["retry", ids["queued"]],
        "retry dead": ["retry", ids["dead"], "--json"],
        "cancel": ["cancel", ids["to_cancel"]],
        "cancel again": ["cancel", ids["to_cancel"], "--json"],
        "enqueue": ["enqueue", "t", '{"b": 1, "a": [1.5, 2]}', "--priority", 3, "--json"],
        "purge": ["purge", "--older-than", 0, "--status", "completed", "--status", "cancelled", "--json"],
        "stats after": ["stats", "--json"],
        "list after": ["list", "--json"],
    }
    out = {}
    for name, args in runs.items():
        code, stdout, stderr = cli(*args, "--db", url, cwd=cwd)
        out[name] = (code, same_everywhere(stdout), same_everywhere(stderr))
    return out


def test_read_and_admin_commands_answer_on_postgresql_as_on_sqlite(tmp_path, postgres_url):
    sqlite = answers(str(tmp_path / "cli.db"), tmp_path)
    pg = answers(with_password(postgres_url), tmp_path)
    for name in sqlite:
        assert pg[name] == sqlite[name], name
    # What they said, so that both saying the same wrong thing fails too.
    assert sqlite["stats --json"][0] == 0
    counts = json.loads(sqlite["stats --json"][1])
    assert {k: counts[k] for k in ("queued", "running", "completed", "failed", "cancelled", "total")} == {
        "queued": 3,
        "running": 0,
        "completed": 1,
        "failed": 1,
        "cancelled": 0,
        "total": 5,
    }
    assert json.loads(sqlite["stats after"][1])["total"] == 4  # 6 tasks, the completed and the cancelled purged
    code, stdout, _ = sqlite["show dead"]
    assert code == 0 and "failed attempts (1):" in stdout and "ValueError: boom" in stdout
    assert sqlite["show missing"] == (3, "", "error: task 999 does not exist (it may have been purged)\n")
    assert "a line of its own" in sqlite["show queued"][1]
    assert json.loads(sqlite["workers --json"][1])[0]["id"] == "w1"
    assert sqlite["retry queued"][0] == 1 and "not requeued: it is queued" in sqlite["retry queued"][1]
    assert json.loads(sqlite["retry dead"][1])["requeued"] is True
    assert sqlite["cancel"] == (0, "task 5 cancelled\n", "")
    assert sqlite["cancel again"][0] == 1
    assert json.loads(sqlite["purge"][1]) == {"deleted": 2}
    enqueued = [t["payload"] for t in json.loads(sqlite["list after"][1]) if t["priority"] == 3]
    assert enqueued == [{"b": 1, "a": [1.5, 2]}]


@pytest.mark.parametrize(
    "command, instead",
    [
        (["backup", "copy.db"], "pg_dump"),
        (["restore", "copy.db"], "pg_restore"),
        (["checkpoint"], "checkpoint"),
        (["vacuum"], "autovacuum"),
        (["import-legacy", "legacy.db"], "import-legacy into a SQLite queue file"),
    ],
)
def test_sqlite_only_commands_refuse_on_postgresql_saying_what_to_use(tmp_path, postgres_url, command, instead):
    url = with_password(postgres_url)
    cli("enqueue", "t", "--db", tmp_path / "copy.db", cwd=tmp_path)  # a good file to restore
    make_legacy(tmp_path / "legacy.db")  # and one to import
    code, stdout, stderr = cli(*command, "--db", url, cwd=tmp_path)
    assert code == 1, (stdout, stderr)
    assert stderr.startswith(f"error: {command[0]} is not available on the postgresql backend: use "), stderr
    assert instead in stderr and stderr.count("\n") == 1, stderr  # one line (cli() checks: no traceback)


def test_worker_drains_what_the_python_api_enqueued(queue_url, tmp_path):
    with Queue(queue_url) as q:
        ids = q.enqueue_many([{"type": "echo", "payload": {"n": i}} for i in range(30)])
    w = WorkerCLI(
        "--db",
        queue_url,
        "--handlers",
        "worker_handlers:REGISTRY",
        "--concurrency",
        4,
        "--worker-id",
        "cli-w",
        cwd=tmp_path,
    )
    try:
        w.err.wait_for("prismq-queue worker cli-w on ")
        with Queue(queue_url) as q:
            wait_until(lambda: all(q.get(i).status == "completed" for i in ids), what="the worker drained the queue")
            assert [q.get(i).result["echo"] for i in ids] == [{"n": i} for i in range(30)]
            assert q.get(ids[0]).locked_by == "cli-w"
    finally:
        code = w.stop()
    if not UNDER_WINE:  # under wine stop() ends the process (Ctrl-Break cannot be delivered there)
        assert code == 0, w.err.text()
    assert PASSWORD not in w.err.text() + w.out.text()


def test_prismq_db_names_the_database_and_demo_runs_its_tasks_to_the_end(queue_url, tmp_path):
    code, stdout, _ = cli("demo", "--tasks", 6, cwd=tmp_path, extra_env={"PRISMQ_DB": queue_url})
    assert code == 0 and stdout.startswith("enqueued 6 tasks into "), stdout
    done = {k: int(v) for k, v in re.findall(r"^\s*(completed|failed): (\d+)$", stdout, re.M)}
    assert done["completed"] + done["failed"] == 6, stdout
    code, stdout, _ = cli("stats", "--json", cwd=tmp_path, extra_env={"PRISMQ_DB": queue_url})
    assert code == 0 and json.loads(stdout)["total"] == 6
    if queue_url.startswith("postgresql://"):
        assert not (tmp_path / "prismq_queue.db").exists()  # the default file was not made instead


@CTRL_BREAK_UNDER_WINE
def test_serve_answers_its_api_runs_tasks_and_loads_its_dashboard(queue_url, tmp_path):
    s = Serve(
        tmp_path,
        "--db",
        queue_url,
        "--port",
        0,
        "--workers",
        1,
        "--concurrency",
        2,
        "--handlers",
        "worker_handlers:REGISTRY",
    )
    try:
        s.start()
        with httpx.Client(base_url=s.base, timeout=30, headers=s.headers) as http:
            ids = [
                http.post("/api/queue/enqueue", json={"type": "echo", "payload": {"n": i}}).json()["task_id"]
                for i in range(6)
            ]
            wait_until(
                lambda: all(http.get(f"/api/queue/tasks/{i}").json()["status"] == "completed" for i in ids),
                what="serve's worker ran the API's tasks",
            )
            assert http.get(f"/api/queue/tasks/{ids[0]}").json()["result"]["echo"] == {"n": 0}
            assert http.get("/api/queue/stats").json()["completed_tasks"] == 6
            page = http.get("/")
            assert page.status_code == 200 and "<html" in page.text.lower()
            panels = http.get("/api/queue/dashboard")
            assert panels.status_code == 200, panels.text
        s.interrupt()
        assert s.wait() == 0, s.output()
    finally:
        s.close()
    assert PASSWORD not in s.output()


def test_every_commands_db_option_says_it_takes_a_postgresql_url():
    from prismq_queue.cli import main

    import click

    def commands(group, prefix=""):
        for name, command in group.commands.items():
            # A group's own options, if it has --db, and each of its subcommands'.
            if isinstance(command, click.Group) and not any(p.name == "db" for p in command.params):
                yield from commands(command, f"{prefix}{name} ")
            else:
                yield f"{prefix}{name}", command

    for name, command in commands(main):
        if name == "copy":
            # Two queues: --from and --to each take a file or a URL.
            ends = [p for p in command.params if p.name in ("source", "destination")]
            assert len(ends) == 2 and all("postgresql:// URL" in (p.help or "") for p in ends), name
            continue
        [db] = [p for p in command.params if p.name == "db"]
        assert "postgresql:// URL" in (db.help or ""), name
