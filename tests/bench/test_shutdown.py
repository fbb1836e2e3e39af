"""An idle ``ainode run`` stops on SIGTERM: every child exits and the command exits 0.

The time it takes is the bench's figure (``python -m bench.shutdown``), not judged here.
"""

from __future__ import annotations

from bench.shutdown import stop_once


def test_an_idle_node_stops_every_process_on_sigterm() -> None:
    stopped = stop_once("", settle_seconds=0.5)
    assert stopped["exit code"] == 0
    assert set(stopped) == {"serve", "worker", "web", "ainode run", "exit code"}
