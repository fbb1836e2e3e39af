"""The pages that show the node: overview, jobs and a job, studies, destinations."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from core.control import DESTINATION_PREFIX, ROUTING, paused_flags
from web import queries
from web.console import Console, Ctx, Refused, before_id, page, render, row_id
from web.overview import overview


def overview_page(ctx: Ctx) -> Response:
    """The overview, or only its panel when htmx refreshes it."""
    fragment = ctx.request.headers.get("hx-request") == "true"
    name = "overview_panel.html" if fragment else "overview.html"
    return render(ctx, name, o=overview(ctx.db, ctx.settings, ctx.console.trend))


def jobs_page(ctx: Ctx) -> Response:
    """One page of jobs matching the query's filters, newest first."""
    settings = ctx.settings
    try:
        filters = queries.JobFilters.parse(dict(ctx.request.query_params))
    except queries.FilterError as exc:
        raise Refused(400, str(exc)) from None
    jobs = queries.job_list(ctx.db, filters, settings.web_page_size)
    more = len(jobs) == settings.web_page_size
    return render(
        ctx,
        "jobs.html",
        jobs=jobs,
        summaries=queries.delivery_summaries(ctx.db, [job.id for job in jobs]),
        filters=filters,
        next_page=filters.query_string(before=jobs[-1].id) if more else None,
        destinations=sorted({str(d) for d in settings.destinations}),
    )


def job_page(ctx: Ctx) -> Response:
    """A job's timeline, inputs, results and deliveries."""
    job_id = row_id(ctx.request.path_params["job_id"], "job")
    story = queries.job_story(ctx.db, job_id)
    if story is None:
        raise Refused(404, f"no job {job_id}")
    return render(ctx, "job.html", s=story, job=story.job)


def studies_page(ctx: Ctx) -> Response:
    """One page of studies, by state or found by identifier."""
    params = ctx.request.query_params
    size = ctx.settings.web_page_size
    try:
        studies = queries.study_list(
            ctx.db,
            params.get("state") or None,
            (params.get("q") or "").strip()[:64] or None,
            before_id(params.get("before")),
            size,
        )
    except queries.FilterError as exc:
        raise Refused(400, str(exc)) from None
    return render(
        ctx,
        "studies.html",
        studies=studies,
        state=params.get("state", ""),
        q=params.get("q", ""),
        next_before=studies[-1].id if len(studies) == size else None,
    )


def destinations_page(ctx: Ctx) -> Response:
    """Every destination (configured or with deliveries), its counts and pause switch."""
    counts = queries.destination_counts(ctx.db)
    flags = paused_flags(ctx.db)
    configured = {str(d) for d in ctx.settings.destinations}
    rows = [
        {
            "name": name,
            "configured": name in configured,
            "paused": f"{DESTINATION_PREFIX}{name}" in flags,
            "counts": counts.get(name, {}),
        }
        for name in sorted(configured | set(counts))
    ]
    return render(ctx, "destinations.html", rows=rows, routing_paused=ROUTING in flags, echo=None)


def routes(console: Console) -> list[Route]:
    """The pages every logged-in user reads."""
    return [
        Route("/", page(console, overview_page)),
        Route("/jobs", page(console, jobs_page)),
        Route("/jobs/{job_id}", page(console, job_page)),
        Route("/studies", page(console, studies_page)),
        Route("/destinations", page(console, destinations_page)),
    ]
