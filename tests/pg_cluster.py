"""A PostgreSQL server for the tests (issue 19): PRISMQ_TEST_POSTGRES_URL, or a throwaway cluster
started here as the Rust tests' harness does (src/storage/postgres/testutil.rs)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from typing import Optional

HOW_TO_INSTALL = (
    "no PostgreSQL server for the tests: install Debian's package (apt-get install postgresql; the "
    "tests start a throwaway cluster with its initdb, no server setup needed) or set "
    "PRISMQ_TEST_POSTGRES_URL=postgresql://user@host:5432/db"
)


def bin_dir() -> Optional[str]:
    """The newest /usr/lib/postgresql/<version>/bin with initdb, or the PATH's. None on Windows:
    the throwaway cluster is a POSIX recipe (runuser, unix sockets), and under wine the glob below
    would find the Linux host's initdb through drive Z:, which a Windows process cannot run. On
    Windows the tests use PRISMQ_TEST_POSTGRES_URL."""
    if sys.platform == "win32":
        return None
    found = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(os.path.join(d, "initdb"))]
    found.sort(key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0)
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb and shutil.which("pg_ctl") else None


def _is_root() -> bool:
    return getattr(os, "geteuid", lambda: -1)() == 0


def _as_postgres(argv: list[str]) -> list[str]:
    # initdb refuses to run as root.
    return ["runuser", "-u", "postgres", "--", *argv] if _is_root() else argv


class Cluster:
    """initdb into a temporary directory, pg_ctl start on a free port (its socket in that directory)."""

    def __init__(self, bin_path: str) -> None:
        self.bin = bin_path
        self.dir = tempfile.mkdtemp(prefix="prismq-pg-py-")
        self.data = os.path.join(self.dir, "data")
        if _is_root():
            shutil.chown(self.dir, "postgres")
        self._run(["initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
        log = os.path.join(self.dir, "log")
        self._run(["pg_ctl", "start", "-D", self.data, "-w", "-t", "60", "-l", log, "-o", options])
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        # Stop it and remove its files once this process is gone, however it ended (a killed
        # session must not leave a server behind).
        runas = "runuser -u postgres -- " if _is_root() else ""
        pg_ctl = os.path.join(self.bin, "pg_ctl")
        subprocess.Popen(
            ["sh", "-c", f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
             f"{runas}'{pg_ctl}' stop -D '{self.data}' -m immediate >/dev/null 2>&1; rm -rf '{self.dir}'"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )

    def _run(self, argv: list[str]) -> None:
        argv = _as_postgres([os.path.join(self.bin, argv[0]), *argv[1:]])
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stdout}{r.stderr}")

    def stop(self) -> None:
        try:
            self._run(["pg_ctl", "stop", "-D", self.data, "-m", "immediate"])
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class PasswordCluster(Cluster):
    """A throwaway cluster of one test module's own, for tests that restart it or kill its
    connections: the ``postgres`` user has ``password`` and every connection must give it
    (scram-sha-256), so wrong-password errors can be provoked."""

    def __init__(self, bin_path: str, password: str) -> None:
        self.password = password
        super().__init__(bin_path)
        self.url = f"postgresql://postgres:{password}@127.0.0.1:{self.port}/postgres"

    def _run(self, argv: list[str]) -> None:
        if argv[0] == "initdb":
            pwfile = os.path.join(self.dir, "pw")
            with open(pwfile, "w", encoding="utf-8") as f:
                f.write(self.password + "\n")
            if _is_root():
                shutil.chown(pwfile, "postgres")
            argv = [a if a != "trust" else "scram-sha-256" for a in argv] + ["--pwfile", pwfile]
        super()._run(argv)

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every session is ended, the server back within seconds."""
        # -l: without it the new server would write to (and hold open) our output pipe.
        self._run(["pg_ctl", "restart", "-D", self.data, "-m", "fast", "-w", "-t", "60", "-l", os.path.join(self.dir, "log")])

    def sql(self, statement: str) -> str:
        """Run ``statement`` with psql (through the socket, as ``postgres``); its output."""
        argv = [os.path.join(self.bin, "psql"), "-X", "-q", "-At", "-h", self.dir, "-p", str(self.port),
                "-U", "postgres", "-d", "postgres", "-c", statement]
        r = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PGPASSWORD": self.password})
        if r.returncode != 0:
            raise RuntimeError(f"psql failed ({r.returncode}): {r.stderr}")
        return r.stdout

    def session(self, statements: str) -> subprocess.Popen[str]:
        """A psql session that runs ``statements`` and then waits for its stdin to close (a lock
        taken in it is held until then)."""
        argv = [os.path.join(self.bin, "psql"), "-X", "-q", "-At", "-h", self.dir, "-p", str(self.port),
                "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1"]
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PGPASSWORD": self.password})
        assert p.stdin is not None
        p.stdin.write(statements + "\n")
        p.stdin.flush()
        return p


class TlsCluster(Cluster):
    """A throwaway cluster with ``ssl=on`` and a server certificate for ``localhost`` only, signed
    by a CA made here (``ca_file``); ``other_ca_file`` is a CA that signed nothing. Made with the
    openssl command line, as the Rust tests' ``tls_server`` does."""

    def _run(self, argv: list[str]) -> None:
        if argv[:2] == ["pg_ctl", "start"]:
            i = argv.index("-o") + 1
            argv = [*argv[:i], f"{argv[i]} {self._make_certificates()}", *argv[i + 1 :]]
        super()._run(argv)

    def _make_certificates(self) -> str:
        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], cwd=self.dir, check=True, capture_output=True)

        key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for ca in ("ca", "other-ca"):
            openssl("req", "-x509", "-days", "3", "-subj", f"/CN=prismq {ca}", "-keyout", f"{ca}.key", *key,
                    "-out", f"{ca}.crt", "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        openssl("req", "-subj", "/CN=localhost", "-keyout", "server.key", *key, "-out", "server.csr")
        with open(os.path.join(self.dir, "server.ext"), "w", encoding="utf-8") as f:
            f.write("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "3", "-extfile", "server.ext", "-out", "server.crt")
        # The server refuses a key others can read, or one not its own.
        server_key, server_crt = os.path.join(self.dir, "server.key"), os.path.join(self.dir, "server.crt")
        os.chmod(server_key, 0o600)
        if _is_root():
            shutil.chown(server_key, "postgres")
            shutil.chown(server_crt, "postgres")
        self.ca_file = os.path.join(self.dir, "ca.crt")
        self.other_ca_file = os.path.join(self.dir, "other-ca.crt")
        return f"-c ssl=on -c ssl_cert_file={server_crt} -c ssl_key_file={server_key}"


def give_up(reason: str) -> None:
    """No server: a failure where one is required (CI sets PRISMQ_REQUIRE_POSTGRES=1), else a skip."""
    import pytest

    if os.environ.get("PRISMQ_REQUIRE_POSTGRES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def running(kind: type, *args: object) -> Iterator[Cluster]:
    """A module fixture's body: a throwaway cluster ``kind(bin_path, *args)``, stopped at the end
    (``give_up`` when no server is installed or it does not start)."""
    bin_path = bin_dir()
    if bin_path is None:
        give_up(HOW_TO_INSTALL)
    try:
        c = kind(bin_path, *args)
    except (OSError, RuntimeError) as e:
        give_up(f"the throwaway PostgreSQL cluster ({kind.__name__}) did not start: {e}")
    try:
        yield c
    finally:
        c.stop()


def with_schema(server_url: str, schema: Optional[str] = None) -> str:
    """The server's URL with a fresh ``?schema=t_<uuid>`` (or the one given)."""
    schema = schema or f"t_{uuid.uuid4().hex}"
    sep = "&" if "?" in server_url else "?"
    return f"{server_url}{sep}schema={schema}"
