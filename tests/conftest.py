from __future__ import annotations

import os
import sys

import pytest

# Spawned processes import helper modules from this directory by name.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from prismq_queue import Queue  # noqa: E402
from wine import UNDER_WINE  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "wine_only_failure(reason): fails under wine only, where wine differs from Windows (the reason says "
        "how); an expected failure (not strict) under wine, an ordinary test everywhere else. Each one is listed "
        "in docs/operations.md, section Windows.",
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        mark = item.get_closest_marker("wine_only_failure")
        if mark is None:
            continue
        reason = mark.kwargs.get("reason") or (mark.args[0] if mark.args else "")
        if not reason:
            raise pytest.UsageError(f"{item.nodeid}: wine_only_failure needs a reason")
        if UNDER_WINE:
            item.add_marker(pytest.mark.xfail(reason=f"wine only: {reason}", strict=False))


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "queue.db")


@pytest.fixture
def queue(db_path):
    with Queue(db_path) as q:
        yield q


def snapshot(q):
    """Everything observable about a queue's contents, to prove an operation wrote nothing."""
    rows = []
    after = None
    while True:
        page = q.list(limit=1000, after_id=after)
        if not page:
            break
        rows += [t.as_dict() for t in page]
        after = page[-1].id
    return q.stats(), rows


def cli_runner():
    """A click CliRunner as click 8.2+ makes it: ``result.stderr`` on its own and
    ``result.output`` with both streams. Click 8.1 (the newest for Python 3.9) gives either one
    or the other, so there the result's ``output`` is stdout followed by stderr."""
    from click.testing import CliRunner, Result

    try:
        CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2: no mix_stderr, streams kept apart already
        return CliRunner()

    class _Result(Result):
        @property
        def output(self) -> str:
            return self.stdout + self.stderr

    class _Runner(CliRunner):
        def invoke(self, *args, **kwargs):
            result = super().invoke(*args, **kwargs)
            result.__class__ = _Result
            return result

    return _Runner(mix_stderr=False)


def pragma(path, name):
    """The value of ``PRAGMA name`` of the database file at ``path``, read by Python's sqlite3
    (a separate library: what any other tool would see)."""
    import sqlite3

    con = sqlite3.connect(str(path))
    try:
        return con.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        con.close()


# ---------------------------------------------------------------------- PostgreSQL (issue 19)
@pytest.fixture(scope="session")
def postgres_server():
    """The URL of a PostgreSQL server: PRISMQ_TEST_POSTGRES_URL, or a throwaway cluster stopped and
    removed at the session's end. Without either: a failure when PRISMQ_REQUIRE_POSTGRES=1 (CI),
    else a skip saying how to get one."""
    import pg_cluster

    given = os.environ.get("PRISMQ_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    bin_path = pg_cluster.bin_dir()
    reason = pg_cluster.HOW_TO_INSTALL
    cluster = None
    if bin_path is not None:
        try:
            cluster = pg_cluster.Cluster(bin_path)
        except (OSError, RuntimeError) as e:
            reason = f"the throwaway PostgreSQL cluster did not start: {e}"
    if cluster is None:
        pg_cluster.give_up(reason)
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """A queue URL in a schema of this test's own (``?schema=t_<uuid>``)."""
    import pg_cluster

    return pg_cluster.with_schema(postgres_server)


@pytest.fixture(params=["sqlite", "postgres"])
def queue_url(request, tmp_path):
    """The database of a test run on both backends: a temporary SQLite file, or a PostgreSQL URL
    with a schema of the test's own (``postgres_url``). A test file whose backends differ defines
    its own."""
    if request.param == "sqlite":
        return str(tmp_path / "q.db")
    return request.getfixturevalue("postgres_url")
