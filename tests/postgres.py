"""A real PostgreSQL server for tests (Debian's postgresql-15 binaries), e.g. for Iceberg SQL catalogs.

Loaded from ``tests/conftest.py`` with ``pytest_plugins = [..., "postgres"]``.

``postgres_server`` (session) runs ``initdb`` into a fresh folder and starts ``postgres`` on 127.0.0.1 on a
free port with trust authentication (no unix socket), and stops it (``pg_ctl stop -m fast``) and removes the
folder afterwards. PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` system
user (Debian's package makes it) or else ``nobody``, through ``runuser``; its folder is therefore made with
``tempfile.mkdtemp`` (pytest's tmp folders are 0700 root's). Binaries come from $PG_BIN, PATH, or the
newest /usr/lib/postgresql/*/bin; without them the tests that ask for the server are skipped.

Fixtures
--------
postgres_server  (session)  PostgresServer: .uri ("postgresql://postgres@127.0.0.1:PORT/batchscore"),
                            .new_database(name=None) -> uri of a fresh, empty database, .uri_for(db)
postgres_db      (function) uri of a fresh database named after the test
Helper: with_driver(uri) -> the same URI naming an installed SQLAlchemy driver (postgresql+psycopg2://...)

SQLAlchemy 2.1 takes a bare ``postgresql://`` to mean the psycopg (3) driver, while pyiceberg[sql-postgres]
installs only psycopg2-binary: with those two, ``create_engine("postgresql://...")`` fails with "No module named
'psycopg'". The URIs here stay bare (what a user types); ``with_driver`` names the driver where one is needed.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "find_postgres_bin", "with_driver"]

SUPERUSER = "postgres"  # the database role; not the OS user the server runs as
DATABASE = "batchscore"
HOST = "127.0.0.1"


def find_postgres_bin() -> Path | None:
    """The folder holding initdb, pg_ctl, postgres and createdb, or None."""
    needed = ("initdb", "pg_ctl", "postgres", "createdb")
    candidates = []
    if os.environ.get("PG_BIN"):
        candidates.append(Path(os.environ["PG_BIN"]))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)  # /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin

    def version(path: str) -> tuple:
        return tuple(int(p) for p in re.findall(r"\d+", path.split("/")[-2]) or [0])

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in needed):
            return folder
    return None


def with_driver(uri: str) -> str:
    """`uri` with an explicit SQLAlchemy driver that is installed: psycopg (3) if importable, else psycopg2."""
    import importlib.util

    scheme, sep, rest = uri.partition("://")
    if "+" in scheme or scheme not in ("postgresql", "postgres"):
        return uri
    driver = "psycopg" if importlib.util.find_spec("psycopg") is not None else "psycopg2"
    return f"postgresql+{driver}{sep}{rest}"


def _run_as() -> str | None:
    """The OS user to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _clean_env() -> dict:
    """os.environ without libpq's PG* variables (a developer's PGHOST/PGPASSWORD must not leak in)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


@dataclass
class PostgresServer:
    """A running PostgreSQL server on 127.0.0.1 with trust authentication."""

    port: int
    bin_dir: Path
    folder: Path  # holds data/ and server.log
    user: str = SUPERUSER
    host: str = HOST
    database: str = DATABASE
    _names: itertools.count = field(default_factory=lambda: itertools.count(1), repr=False)

    @property
    def uri(self) -> str:
        """The session database: postgresql://postgres@127.0.0.1:PORT/batchscore (SQLAlchemy and libpq form)."""
        return self.uri_for(self.database)

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def uri_for(self, database: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def new_database(self, name: str | None = None) -> str:
        """Create a fresh, empty database and return its URI. The name is made safe (lower case, [a-z0-9_],
        at most 63 bytes) and, when a database of that name exists already, given a numbered suffix."""
        base = re.sub(r"[^a-z0-9_]+", "_", (name or "test").lower()).strip("_") or "test"
        if base[0].isdigit():
            base = "db_" + base
        base = base[:50]
        candidate = base
        for _ in range(100):
            res = self._createdb(candidate)
            if res.returncode == 0:
                return self.uri_for(candidate)
            if "already exists" not in res.stderr:
                raise RuntimeError(f"createdb {candidate} failed: {res.stderr.strip()}")
            candidate = f"{base}_{next(self._names)}"
        raise RuntimeError(f"no free database name like {base!r}")

    def _createdb(self, name: str) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / "createdb"), "-h", self.host, "-p", str(self.port), "-U", self.user, "-w", name]
        return subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=_clean_env())


def _as_user(user: str | None, cmd: list[str]) -> list[str]:
    return cmd if user is None else ["runuser", "-u", user, "--", *cmd]


def _start(bin_dir: Path, user: str | None) -> PostgresServer:
    folder = Path(tempfile.mkdtemp(prefix="pgtest-"))
    data = folder / "data"
    if user is not None:
        os.chown(folder, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)

    def run(cmd: list[str]) -> subprocess.CompletedProcess:
        # cwd: the server's own folder (the user may not be allowed into ours)
        return subprocess.run(
            _as_user(user, cmd), capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=folder, env=_clean_env()
        )

    try:
        res = run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8"]
            + ["--locale=C", "--no-sync"]
        )
        if res.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{res.stdout}\n{res.stderr}")
        last = ""
        for _ in range(3):  # a free port can be taken between _free_port() and the server binding it
            port = _free_port()
            opts = (
                f"-c listen_addresses={HOST} -p {port} -c unix_socket_directories='' "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            log = folder / "server.log"
            res = run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start"])
            if res.returncode == 0:
                server = PostgresServer(port=port, bin_dir=bin_dir, folder=folder)
                server._createdb(DATABASE).check_returncode()
                return server
            last = f"{res.stdout}\n{res.stderr}\n{log.read_text(errors='replace') if log.exists() else ''}"
        raise RuntimeError(f"postgres did not start:\n{last}")
    except BaseException:
        _stop(bin_dir, user, folder)
        raise


def _stop(bin_dir: Path, user: str | None, folder: Path) -> None:
    data = folder / "data"
    pidfile = data / "postmaster.pid"
    if pidfile.exists():
        res = subprocess.run(
            _as_user(user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"]),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            cwd=folder,
            env=_clean_env(),
        )
        if res.returncode != 0 and pidfile.exists():  # last resort: the postmaster's own pid, never a name
            try:
                pid = int(pidfile.read_text().split()[0])
                os.kill(pid, signal.SIGQUIT)
                time.sleep(1)
            except (ValueError, IndexError, OSError):
                pass
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for the session (see the module docstring); skipped when it cannot run here."""
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl, postgres, createdb) not found; apt-get install postgresql")
    user = _run_as()
    if os.geteuid() == 0 and (user is None or shutil.which("runuser") is None):
        pytest.skip("running as root, and no unprivileged user (postgres, nobody) or runuser to start PostgreSQL as")
    server = _start(bin_dir, user)
    try:
        yield server
    finally:
        _stop(bin_dir, user, server.folder)


@pytest.fixture
def postgres_db(postgres_server, request):
    """URI of a fresh, empty database named after the test."""
    return postgres_server.new_database(request.node.name)
