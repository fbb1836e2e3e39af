"""The embedded broker: a message is seen whole or not at all, then delivered once."""

from __future__ import annotations

import os
from collections.abc import Callable
from queue import Empty

import pytest

from core.config import Settings
from worker import embedded_broker
from worker.celery_app import create_app


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
