"""Views for dashboards that read the database directly (Grafana and the like).

They are not made by the migrations: SQLite rebuilds a table to alter it, and
a view naming that table breaks the rebuild.  ``ainode db views`` (re)creates
them after ``ainode db upgrade``; docs/dashboards-sql.md describes them.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Engine

DAILY_VOLUME = """
CREATE VIEW daily_volume AS
SELECT date(created_at) AS day, pipeline, state, count(*) AS jobs
FROM jobs GROUP BY date(created_at), pipeline, state
"""

#: From the study's last received instance to the job's last delivery (seconds).
SECONDS = {
    "sqlite": "(julianday(d.delivered) - julianday(s.last_received_at)) * 86400.0",
    "postgresql": "extract(epoch from d.delivered - s.last_received_at)",
}

JOB_TIMES = """
CREATE VIEW job_times AS
SELECT j.id AS job_id, j.pipeline, j.state, j.finished_at,
       j.queue_wait_seconds, j.load_seconds, j.inference_seconds, j.write_seconds,
       j.send_seconds, {seconds} AS time_to_result_seconds
FROM jobs j
JOIN studies s ON s.id = j.study_id
LEFT JOIN (
    SELECT r.job_id, max(dl.delivered_at) AS delivered
    FROM results r JOIN deliveries dl ON dl.result_id = r.id
    GROUP BY r.job_id
) d ON d.job_id = j.id
WHERE j.finished_at IS NOT NULL
"""

VIEWS = ("daily_volume", "job_times")


def create_views(engine: Engine) -> list[str]:
    """Drop and create the dashboard views on ``engine``; returns their names."""
    dialect = engine.dialect.name
    with engine.begin() as connection:
        for name in VIEWS:
            connection.execute(text(f"DROP VIEW IF EXISTS {name}"))
        connection.execute(text(DAILY_VOLUME))
        connection.execute(
            text(JOB_TIMES.format(seconds=SECONDS.get(dialect, SECONDS["postgresql"])))
        )
    return list(VIEWS)
