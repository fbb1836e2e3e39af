"""A private PostgreSQL cluster on a free loopback port, for tests that stop and start it.

The machine's shared PostgreSQL (127.0.0.1:5432) must never be restarted by a
test; fault tests that need "the database goes away" start their own cluster in
a temporary folder with ``initdb`` + ``pg_ctl`` and stop it by its own data
directory.  PostgreSQL refuses to run as root, so when the tests run as root the
cluster folder is owned by the ``postgres`` user and the tools run through
``runuser -u postgres --``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from .ports import LOOPBACK, free_port, port_is_open
from .processes import ScopedPeer, tail
from .services import ServiceUnavailable
from .waiting import WaitTimeout, wait_until

POSTGRES_SUPERUSER = "postgres"


def postgres_bin_dir() -> Path:
    """The folder of ``initdb``/``pg_ctl`` (newest ``/usr/lib/postgresql/<n>/bin``)."""
    root = Path("/usr/lib/postgresql")
    candidates = sorted(
        (p / "bin" for p in root.glob("*") if (p / "bin" / "pg_ctl").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise ServiceUnavailable("no PostgreSQL server binaries under /usr/lib/postgresql")
    return candidates[-1]


class PrivatePostgres(ScopedPeer):
    """A throw-away PostgreSQL cluster listening on ``127.0.0.1:<free port>`` only.

    ``start()`` runs ``initdb`` the first time; ``stop()`` and ``start()`` can be
    called repeatedly (the data survives); ``destroy()`` stops it and removes the
    folder.  Use as a context manager for a guaranteed clean-up.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ainode-pg-", dir="/tmp"))
        os.chmod(self.root, 0o755)
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log_path = self.root / "postgres.log"
        self.bin_dir = postgres_bin_dir()
        self._as_postgres = os.geteuid() == 0
        self._initialised = False

    # ------------------------------------------------------------------ commands
    def _run(self, *argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if self._as_postgres:
            command = ["runuser", "-u", POSTGRES_SUPERUSER, "--", *command]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise ServiceUnavailable(
                f"{' '.join(argv)} failed ({proc.returncode}): "
                f"{proc.stderr.strip() or proc.stdout.strip()}\n{self.log_tail()}"
            )
        return proc

    def _init(self) -> None:
        self.socket_dir.mkdir(exist_ok=True)
        if self._as_postgres:
            user = pwd.getpwnam(POSTGRES_SUPERUSER)
            for path in (self.root, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            POSTGRES_SUPERUSER,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self._initialised = True

    def start(self, timeout: float = 30.0) -> PrivatePostgres:
        """Start the cluster (initialising it the first time) and wait for connections."""
        if not self._initialised:
            self._init()
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses={LOOPBACK} "
            "-c fsync=off -c max_connections=100"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-o",
            options,
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            str(int(timeout)),
            "start",
            timeout=timeout + 10,
        )
        try:
            wait_until(self.accepts, timeout, 0.05)
        except WaitTimeout as exc:
            raise ServiceUnavailable(f"private PostgreSQL not ready: {self.log_tail()}") from exc
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster (``pg_ctl stop -m mode``); a stopped cluster is left alone."""
        if not self._initialised or not (self.data_dir / "postmaster.pid").exists():
            return
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        """Stop the cluster and delete its folder."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ access
    def accepts(self) -> bool:
        """Whether the server accepts a connection and answers ``SELECT 1`` right now."""
        if not port_is_open(LOOPBACK, self.port):
            return False
        import psycopg

        try:
            with psycopg.connect(self.conninfo("postgres"), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def conninfo(self, database: str) -> str:
        """libpq connection string for ``database`` over loopback TCP."""
        return f"host={LOOPBACK} port={self.port} user={POSTGRES_SUPERUSER} dbname={database}"

    def url(self, database: str = "postgres", driver: str = "psycopg") -> str:
        """SQLAlchemy URL of ``database`` on this cluster."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{POSTGRES_SUPERUSER}@{LOOPBACK}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create ``name`` and return its SQLAlchemy URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def log_tail(self, max_bytes: int = 3000) -> str:
        """The end of the server log (for assertion messages)."""
        return tail(self.log_path, max_bytes)

    teardown = destroy
