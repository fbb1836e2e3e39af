"""The embedded broker: a message is seen whole or not at all, then delivered once;
a wait for messages ends when the worker is told to stop."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from queue import Empty

import pytest
from celery.worker import state as worker_state
from kombu import Consumer, Producer, Queue

from core.config import Settings
from worker import embedded_broker
from worker.celery_app import NodeCelery, create_app


def test_a_message_being_written_is_invisible_to_consumers(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(make_settings())
    seen_while_writing: list[object] = []
    real_replace = os.replace

    def replace_after_a_look(src: str, dst: str) -> None:
        # The moment kombu's own transport would expose a file that is not complete.
        with app.connection_for_read() as connection:
            try:
                seen_while_writing.append(connection.default_channel._get("cpu"))
            except Empty:
                seen_while_writing.append(None)
        real_replace(src, dst)

    monkeypatch.setattr(embedded_broker.os, "replace", replace_after_a_look)
    with app.connection_for_write() as connection:
        assert isinstance(connection.default_channel, embedded_broker.Channel)
        connection.default_channel._put("cpu", {"job": 7})
    monkeypatch.undo()

    assert seen_while_writing == [None]
    with app.connection_for_read() as connection:
        assert connection.default_channel._get("cpu") == {"job": 7}
        with pytest.raises(Empty):
            connection.default_channel._get("cpu")
    queue_folder = app.node_settings.embedded_broker_dir / "queue"
    assert list(queue_folder.iterdir()) == []


def test_a_failed_write_leaves_no_file(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(make_settings())

    def disk_full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(embedded_broker.os, "replace", disk_full)
    with app.connection_for_write() as connection, pytest.raises(Exception, match="cpu"):
        connection.default_channel._put("cpu", {"job": 8})
    monkeypatch.undo()

    assert list((app.node_settings.embedded_broker_dir / "queue").iterdir()) == []


def _drain(app: NodeCelery, timeout: float) -> tuple[list[object], float]:
    """Wait up to ``timeout`` for a message on ``cpu``: the bodies delivered and the time waited."""
    delivered: list[object] = []
    with (
        app.connection_for_read() as connection,
        Consumer(connection, [Queue("cpu")], callbacks=[lambda body, _: delivered.append(body)]),
        contextlib.suppress(TimeoutError),
    ):
        started = time.monotonic()
        connection.drain_events(timeout=timeout)
    return delivered, time.monotonic() - started


def test_a_waiting_worker_stops_waiting_once_told_to_stop(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A warm stop sets the flag to exit code 0, which is falsy but still a stop.
    monkeypatch.setattr(worker_state, "should_stop", 0)
    delivered, waited = _drain(create_app(make_settings()), timeout=30.0)
    assert delivered == []
    assert waited < 15.0  # the 30 s wait was cut short, not run out


def test_a_wait_without_a_stop_runs_to_its_timeout_and_delivers_a_message(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings())
    delivered, waited = _drain(app, timeout=0.5)
    assert delivered == []
    assert waited >= 0.5
    with app.connection_for_write() as connection:
        Producer(connection).publish({"job": 9}, routing_key="cpu", declare=[Queue("cpu")])
    delivered, _ = _drain(app, timeout=5.0)
    assert delivered == [{"job": 9}]
