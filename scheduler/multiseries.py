"""Routing for multi-series pipelines: find every series a pipeline needs in the study.

A multi-series pipeline (e.g. brain MR needing T1c, T2 and FLAIR) declares
its inputs as roles matched by series description and modality.  When a
study becomes stable, each role is filled with a series of the study; the
series filling the first role is the job's primary series (its grid is the
model's grid) and creates the one job; the others only contribute.  When a
role is still unfilled, the study waits: it is routed again at the next
stability check, until it has been quiet for ``multi_series_wait_seconds``,
and then the missing roles are recorded as the reason no job was made.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from core.db.models import Job, JobInput, Series, Study
from pipelines.spec import PipelineSpec

__all__ = ["Companions", "fill_roles", "record_inputs"]

Companions = dict[str, Series]


def _assign(spec: PipelineSpec, candidates: list[Series]) -> Companions:
    """Fill each role with the best unused matching series (most instances, then newest)."""
    chosen: Companions = {}
    used: set[int] = set()
    for role in spec.inputs:
        matches = [
            series
            for series in candidates
            if series.id not in used and role.matches(series.modality, series.series_description)
        ]
        if matches:
            best = max(matches, key=lambda series: (series.instance_count, series.id))
            chosen[role.role] = best
            used.add(best.id)
    return chosen


def fill_roles(
    study: Study, series: Series, spec: PipelineSpec, now: datetime, wait_seconds: float
) -> tuple[Companions | None, str | None, bool]:
    """The series of ``study`` for each input role of ``spec``, as seen from ``series``.

    Returns
    -------
    tuple
        ``(roles, note, waiting)``: ``roles`` (role to series, in input order)
        when ``series`` is the primary and every role is filled, else None;
        a routing note (only from the one series responsible for it); and
        whether the study should be routed again later to wait for series.
    """
    chosen = _assign(spec, list(study.series))
    primary_role = spec.inputs[0].role
    responsible = chosen.get(primary_role) or next(iter(chosen.values()), None)
    if responsible is None or responsible.id != series.id:
        return None, None, False
    missing = [role.role for role in spec.inputs if role.role not in chosen]
    if not missing:
        return chosen, None, False
    quiet = (now - study.last_received_at).total_seconds()
    if quiet < wait_seconds:
        note = f"{spec.name}: waiting up to {wait_seconds:g} s for series {', '.join(missing)}"
        return None, note, True
    note = f"{spec.name}: no series for {', '.join(missing)} after waiting {wait_seconds:g} s"
    return None, note, False


def record_inputs(session: Session, job: Job, roles: Companions) -> None:
    """Store which series fills which role of ``job``."""
    for role, series in roles.items():
        session.add(JobInput(job_id=job.id, series_id=series.id, role=role))
