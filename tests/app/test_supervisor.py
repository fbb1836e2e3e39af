"""``ainode run``'s supervisor: a child that exits is started again, and stop ends every child."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from app.supervisor import Child, ProcessGroup


def _wait_for(condition: Callable[[], bool], deadline_seconds: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or the deadline passes."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_child_that_exits_is_started_again(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    child = Child("short", [sys.executable, "-c", f"open({str(starts)!r}, 'a').write('x')"])
    group = ProcessGroup([child], stop_timeout=5)

    def stop_after_a_restart() -> None:
        _wait_for(lambda: starts.exists() and len(starts.read_text()) >= 2)
        group.request_stop()

    watcher = threading.Thread(target=stop_after_a_restart)
    watcher.start()
    assert group.run() == 0
    watcher.join()
    assert len(starts.read_text()) >= 2
    assert child.restarts >= 1


def test_stop_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    script = (
        "import signal\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "signal.pause()\n"
    )
    child = Child("stubborn", [sys.executable, "-c", script])
    group = ProcessGroup([child], stop_timeout=0.5)
    child.start()
    try:
        assert _wait_for(ready.exists)
        group.stop()
        assert child.process is not None
        assert child.process.returncode == -signal.SIGKILL
    finally:
        if child.process is not None and child.process.poll() is None:
            child.process.kill()
            child.process.wait()
