"""/metrics: read from SQL at scrape time, accepted by ``promtool check metrics``, no UIDs."""

from __future__ import annotations

import subprocess
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from core.db.models import DeliveryState, JobState
from tests.web.conftest import DESTINATION, seed_job


def test_metrics_are_read_from_the_database_and_pass_promtool(
    app: Any, db: sessionmaker[Session]
) -> None:
    seed_job(db)
    seed_job(db, uid_suffix="2", state=JobState.FAILED, delivery_state=DeliveryState.FAILED)
    with TestClient(app) as client:
        response = client.get("/metrics")  # no login: scraped by Prometheus
    assert response.status_code == 200
    text = response.text

    checked = subprocess.run(
        ["/usr/bin/promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
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
