"""/metrics: read from SQL at scrape time, accepted by ``promtool check metrics``, no UIDs."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from core.config import Settings
from core.db.models import DeliveryState, JobState
from dicom_node.recording.group_commit import GroupCommitRecorder
from dicom_node.scp.server import StorageSCP
from dicom_node.scp.settings import ScpSettings
from pipelines.phantom import generate_ct_phantom
from scheduler.dispatch import Dispatcher
from tests.support.refusals import refusal_counts
from tests.support.waiting import wait_until
from tests.web.conftest import DESTINATION, LoggedIn, seed_job
from web.actions import Actions
from web.app import create_app
from web.metrics import CachedMetrics


def promtool_check(text: str) -> str:
    """What ``promtool check metrics`` objects to in ``text`` (empty: nothing)."""
    checked = subprocess.run(
        ["/usr/bin/promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return "" if checked.returncode == 0 else checked.stdout + checked.stderr


def test_metrics_are_read_from_the_database_and_pass_promtool(
    app: Any, db: sessionmaker[Session]
) -> None:
    seed_job(db)
    seed_job(db, uid_suffix="2", state=JobState.FAILED, delivery_state=DeliveryState.FAILED)
    with TestClient(app) as client:
        response = client.get("/metrics")  # no login: scraped by Prometheus
    assert response.status_code == 200
    text = response.text

    assert promtool_check(text) == ""

    samples = samples_of(text)
    assert samples[("ainode_jobs", (("pipeline", "ct-lungs"), ("state", "failed")))] == 1
    assert samples[("ainode_queue_depth", (("stage", "failed"),))] == 3
    failed = (("destination", DESTINATION), ("outcome", "failed"))
    assert samples[("ainode_delivery_attempts_total", failed)] == 2
    ttr = (("destination", DESTINATION), ("pipeline", "ct-lungs"))
    assert samples[("ainode_time_to_result_seconds_count", ttr)] == 2
    assert 35 < samples[("ainode_time_to_result_seconds_sum", ttr)] < 45  # 2 x 20 s
    bucket = (("destination", DESTINATION), ("le", "30.0"), ("pipeline", "ct-lungs"))
    assert samples[("ainode_time_to_result_seconds_bucket", bucket)] == 2
    stage = (("pipeline", "ct-lungs"), ("stage", "inference"))
    assert samples[("ainode_stage_duration_seconds_count", stage)] == 2
    assert "1.2.826" not in text and "A123" not in text and "PID-77" not in text
    assert all(name.startswith("ainode_") for name, _ in samples)


def samples_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition text by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_instances_refused_by_a_real_scp_are_counted_in_metrics_and_on_the_overview(
    web_settings: Settings, db: sessionmaker[Session], logged_in: LoggedIn
) -> None:
    scp = StorageSCP(ScpSettings.from_settings(web_settings), GroupCommitRecorder(db))
    scp.start()
    try:
        bad, good = generate_ct_phantom(slices=2, rows=16, columns=16, seed=5).datasets
        del bad.SeriesInstanceUID
        ae = AE(ae_title="REFUSED_SCU")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        association = ae.associate("127.0.0.1", scp.port, ae_title=web_settings.ae_title)
        answered = [int(association.send_c_store(ds).Status) for ds in (bad, bad, good)]
        association.release()
    finally:
        scp.stop()
    assert answered == [0xC001, 0xC001, 0x0000]

    wait_until(lambda: sum(refusal_counts(db).values()) == 2, 10, 0.05)
    client, _ = logged_in("viewer")
    text = client.get("/metrics").text
    assert promtool_check(text) == ""
    samples = samples_of(text)
    refused_labels = (("cause", "invalid-instance"), ("status", "0xC001"))
    assert samples[("ainode_instances_refused_total", refused_labels)] == 2
    assert samples[("ainode_instances_received_total", ())] == 1
    assert "REFUSED_SCU" not in text  # AE titles stay out of the labels

    overview = client.get("/", headers={"hx-request": "true"}).text
    assert 'data-refused="hour">2<' in overview
    assert "<td>0xC001</td><td>invalid-instance</td><td>REFUSED_SCU</td><td>2</td>" in overview


def test_metrics_are_served_again_for_metrics_cache_seconds(
    app: Any, db: sessionmaker[Session]
) -> None:
    with TestClient(app) as client:
        first = client.get("/metrics").text
        seed_job(db)
        assert client.get("/metrics").text == first  # the default: 10 s


def test_metrics_cache_off_renders_every_scrape(
    web_settings: Settings,
    make_settings: Callable[..., Settings],
    db: sessionmaker[Session],
    queue: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AINODE_METRICS_CACHE_SECONDS", "0")
    settings = make_settings(database_url=web_settings.effective_database_url)
    assert settings.metrics_cache_seconds == 0
    app = create_app(settings, Actions(Dispatcher(queue, db, settings)))
    with TestClient(app) as client:
        first = samples_of(client.get("/metrics").text)
        seed_job(db)
        second = samples_of(client.get("/metrics").text)
    jobs = ("ainode_jobs_finished_total", (("pipeline", "ct-lungs"), ("state", "succeeded")))
    assert jobs not in first and second[jobs] == 1


class CountingCollector(Collector):
    """One gauge whose value is how often it was collected; each collect takes ``seconds``."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.collects = 0
        self.seconds = seconds

    def collect(self) -> Iterator[Metric]:
        self.collects += 1
        time.sleep(self.seconds)
        yield GaugeMetricFamily("ainode_test_collects", "Collects so far.", value=self.collects)


def counting_registry(seconds: float = 0.0) -> tuple[CollectorRegistry, CountingCollector]:
    registry = CollectorRegistry(auto_describe=False)
    collector = CountingCollector(seconds)
    registry.register(collector)
    return registry, collector


def test_cached_metrics_render_once_per_period_and_never_when_off() -> None:
    now = [100.0]
    registry, collector = counting_registry()
    cached = CachedMetrics(registry, 10, clock=lambda: now[0])
    first = cached.render()
    now[0] += 9.9
    assert cached.render() == first
    now[0] += 0.1
    assert cached.render() != first
    assert collector.collects == 2

    registry, collector = counting_registry()
    uncached = CachedMetrics(registry, 0)
    uncached.render()
    uncached.render()
    assert collector.collects == 2


def test_scrapes_arriving_during_a_render_get_its_text() -> None:
    registry, collector = counting_registry(seconds=0.3)
    cached = CachedMetrics(registry, 10)
    texts: list[bytes] = []
    scrapes = [threading.Thread(target=lambda: texts.append(cached.render())) for _ in range(4)]
    for scrape in scrapes:
        scrape.start()
    for scrape in scrapes:
        scrape.join(10)
    assert collector.collects == 1
    assert len(texts) == 4 and len(set(texts)) == 1


class FailingOnce(Collector):
    """Fails its first collect, as a scrape does while the database is down."""

    def __init__(self) -> None:
        self.failed = False

    def collect(self) -> Iterator[Metric]:
        if not self.failed:
            self.failed = True
            raise RuntimeError("database down")
        yield GaugeMetricFamily("ainode_test_up", "Up.", value=1)


def test_a_failed_render_is_not_kept() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FailingOnce())
    cached = CachedMetrics(registry, 10)
    with pytest.raises(RuntimeError):
        cached.render()
    assert b"ainode_test_up 1.0" in cached.render()
