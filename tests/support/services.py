"""Redis and PostgreSQL on loopback: make sure they run, hand out throw-away databases.

Nothing here skips a test: if a service cannot be reached or started, a
:class:`ServiceUnavailable` explains why.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import uuid
from collections.abc import Callable

from .ports import LOOPBACK, port_is_open
from .waiting import WaitTimeout, wait_until

REDIS_PORT = 6379
POSTGRES_PORT = 5432
POSTGRES_USER = "postgres"

REDIS_START_COMMAND = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
]
POSTGRES_START_COMMAND = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


class ServiceUnavailable(RuntimeError):
    """A required service is not reachable and could not be started."""


# --------------------------------------------------------------------- Redis
def redis_ping(host: str = LOOPBACK, port: int = REDIS_PORT, timeout: float = 0.5) -> bool:
    """Return whether a Redis server answers ``PING`` with ``+PONG``.

    Parameters
    ----------
    host, port : str, int
        Server address.
    timeout : float
        Socket timeout in seconds.

    Returns
    -------
    bool
        True if the server answered PONG.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def ensure_redis(db: int = 15, timeout: float = 10.0) -> str:
    """Make sure Redis answers on 127.0.0.1:6379 and return a URL for it.

    If the server does not answer ``PING``, it is started (daemonised, no
    persistence) with :data:`REDIS_START_COMMAND` and waited for.

    Parameters
    ----------
    db : int
        Database number in the URL (default 15, away from a developer's db 0).
    timeout : float
        Seconds to wait for a started server to answer.

    Returns
    -------
    str
        ``redis://127.0.0.1:6379/{db}``.

    Raises
    ------
    ServiceUnavailable
        If the server could not be started or did not answer in time.
    """
    url = f"redis://{LOOPBACK}:{REDIS_PORT}/{db}"
    if redis_ping():
        return url
    try:
        proc = subprocess.run(
            REDIS_START_COMMAND, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceUnavailable(f"could not run {REDIS_START_COMMAND[0]}: {exc}") from exc
    if proc.returncode != 0:
        raise ServiceUnavailable(
            f"redis-server failed to start (exit {proc.returncode}): "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    try:
        wait_until(redis_ping, timeout, 0.05)
    except WaitTimeout as exc:
        raise ServiceUnavailable(
            f"redis-server started but did not answer PING within {timeout:.0f}s "
            "(see /var/log/redis/ci.log)"
        ) from exc
    return url


# --------------------------------------------------------------------- PostgreSQL
def postgres_url(database: str = "postgres", driver: str = "psycopg") -> str:
    """Return the SQLAlchemy URL of a database on the loopback server.

    Parameters
    ----------
    database : str
        Database name.
    driver : str
        SQLAlchemy driver suffix; empty for a plain libpq URL.

    Returns
    -------
    str
        e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``.
    """
    scheme = f"postgresql+{driver}" if driver else "postgresql"
    return f"{scheme}://{POSTGRES_USER}@{LOOPBACK}:{POSTGRES_PORT}/{database}"


def _conninfo(database: str) -> str:
    return f"host={LOOPBACK} port={POSTGRES_PORT} user={POSTGRES_USER} dbname={database}"


def ensure_postgres(timeout: float = 30.0) -> str:
    """Make sure PostgreSQL accepts connections on 127.0.0.1:5432.

    If the port is closed, the cluster is started with
    :data:`POSTGRES_START_COMMAND` and waited for.

    Parameters
    ----------
    timeout : float
        Seconds to wait for a started server.

    Returns
    -------
    str
        SQLAlchemy URL of the ``postgres`` maintenance database.

    Raises
    ------
    ServiceUnavailable
        If the server could not be started or does not accept connections.
    """
    if not port_is_open(LOOPBACK, POSTGRES_PORT):
        try:
            proc = subprocess.run(
                ["bash", "-c", POSTGRES_START_COMMAND],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServiceUnavailable(f"could not run pg_ctlcluster: {exc}") from exc
        if proc.returncode != 0:
            raise ServiceUnavailable(
                f"`{POSTGRES_START_COMMAND}` failed (exit {proc.returncode}): "
                f"{proc.stderr.strip() or proc.stdout.strip()}"
            )
    import psycopg

    def accepts() -> bool:
        try:
            with psycopg.connect(_conninfo("postgres"), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    try:
        wait_until(accepts, timeout, 0.1)
    except WaitTimeout as exc:
        raise ServiceUnavailable(
            f"PostgreSQL at {LOOPBACK}:{POSTGRES_PORT} does not accept connections "
            f"as {POSTGRES_USER!r} within {timeout:.0f}s"
        ) from exc
    return postgres_url("postgres")


def fresh_postgres_database(prefix: str = "test") -> tuple[str, Callable[[], None]]:
    """Create a uniquely named database and return its URL and a dropper.

    Parameters
    ----------
    prefix : str
        Start of the database name (lower-cased; characters other than
        ``[a-z0-9_]`` become ``_``). A random suffix is appended.

    Returns
    -------
    url : str
        ``postgresql+psycopg://postgres@127.0.0.1:5432/<name>``.
    dropper : callable
        Terminates the database's connections and drops it. Idempotent.

    Raises
    ------
    ServiceUnavailable
        If PostgreSQL cannot be reached.
    """
    import psycopg
    from psycopg import sql

    ensure_postgres()
    clean = re.sub(r"[^a-z0-9_]", "_", prefix.lower()) or "test"
    name = f"{clean[:40]}_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_conninfo("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop() -> None:
        with psycopg.connect(_conninfo("postgres"), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    return postgres_url(name), drop
