"""Loopback TCP ports: pick a free one, wait until one accepts connections."""

from __future__ import annotations

import socket
import time

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is currently free on ``host``.

    The port is found by binding to port 0 and closing the socket, so another
    process could in principle take it before the caller does; callers that
    start servers should treat a bind failure as retryable.

    Parameters
    ----------
    host : str
        Address to bind to; loopback by default.

    Returns
    -------
    int
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """Return whether a TCP connection to ``host:port`` succeeds right now.

    Parameters
    ----------
    host : str
        Address to connect to.
    port : int
        TCP port.
    timeout : float
        Connect timeout in seconds.

    Returns
    -------
    bool
        True if the connection was accepted.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Wait until ``host:port`` accepts TCP connections.

    Parameters
    ----------
    host : str
        Address to connect to.
    port : int
        TCP port.
    timeout : float
        Seconds until giving up.
    interval : float
        Seconds between attempts.

    Raises
    ------
    TimeoutError
        If the port did not accept a connection before the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if port_is_open(host, port, timeout=max(0.05, min(0.5, remaining))):
            return
        if remaining <= 0:
            raise TimeoutError(f"{host}:{port} did not accept connections within {timeout:.1f}s")
        time.sleep(min(interval, max(remaining, 0.0)))
