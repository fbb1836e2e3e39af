"""The operators' actions: each confirmed in the page, audited, then back with a message.

Retry a delivery, re-run a job or re-send its results, acknowledge a
failure, retry every failure to a destination, pause and resume routing or
a destination.  Each goes through :class:`web.actions.Actions`.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from core.config import Destination
from core.db.models import Role
from web.actions import ActionError
from web.audit import audit_object
from web.console import Console, Ctx, Handler, Refused, page, row_id, safe_back

#: An action: what it acted on (for the audit trail) and the message shown to the operator.
Action = Callable[[Ctx], tuple[str, str]]


def audited(name: str, run: Action) -> Handler:
    """An audited operator action that redirects back with a message."""

    def handler(ctx: Ctx) -> Response:
        try:
            obj, message = run(ctx)
        except ActionError as exc:
            ctx.audit(name, ctx.request.url.path, "refused", str(exc))
            raise Refused(exc.status, str(exc)) from None
        ctx.audit(name, obj, "ok", message)
        ctx.flash(message)
        return RedirectResponse(safe_back(ctx.form.get("back")), status_code=303)

    return handler


def _path_id(ctx: Ctx, key: str, what: str) -> int:
    return row_id(ctx.request.path_params[key], what)


def _username(ctx: Ctx) -> str:
    assert ctx.user is not None  # actions need the operator role
    return ctx.user.username


def _destination(ctx: Ctx) -> str:
    name = ctx.form.get("destination", "")
    try:
        Destination.parse(name)
    except ValueError:
        raise ActionError(400, f"not a destination: {name!r}") from None
    return name


def retry_delivery(ctx: Ctx) -> tuple[str, str]:
    """A failed, retrying or not committed delivery gets a fresh attempt budget."""
    delivery_id = _path_id(ctx, "delivery_id", "delivery")
    ctx.console.actions.retry_delivery(delivery_id)
    name = audit_object("delivery", delivery_id)
    return name, f"{name} queued again"


def rerun(ctx: Ctx) -> tuple[str, str]:
    """The job runs again from its original input."""
    job_id = _path_id(ctx, "job_id", "job")
    ctx.console.actions.replay(job_id, rerun=True)
    name = audit_object("job", job_id)
    return name, f"{name} queued to run again"


def resend(ctx: Ctx) -> tuple[str, str]:
    """Every configured destination gets the job's results again."""
    job_id = _path_id(ctx, "job_id", "job")
    count = ctx.console.actions.replay(job_id, rerun=False)
    return audit_object("job", job_id), f"{count} deliveries of job {job_id} queued again"


def acknowledge(ctx: Ctx) -> tuple[str, str]:
    """A failed job or delivery leaves the failure count."""
    kind = ctx.request.path_params["kind"]
    object_id = _path_id(ctx, "object_id", kind)
    ctx.console.actions.acknowledge(kind, object_id, _username(ctx))
    name = audit_object(kind, object_id)
    return name, f"{name} acknowledged"


def bulk_retry(ctx: Ctx) -> tuple[str, str]:
    """Every failed delivery to one destination is queued again."""
    name = _destination(ctx)
    count = ctx.console.actions.bulk_retry(name)
    return name, f"{count} failed deliveries to {name} queued again"


def pause_destination(paused: bool) -> Action:
    """Hold (or release) the deliveries to one destination."""

    def run(ctx: Ctx) -> tuple[str, str]:
        name = _destination(ctx)
        ctx.console.actions.pause_destination(name, paused, _username(ctx))
        return name, f"deliveries to {name} {'paused' if paused else 'resumed'}"

    return run


def pause_routing(paused: bool) -> Action:
    """Hold (or release) the routing of received studies."""

    def run(ctx: Ctx) -> tuple[str, str]:
        ctx.console.actions.pause_routing(paused, _username(ctx))
        return "routing", f"routing {'paused: received studies wait' if paused else 'resumed'}"

    return run


#: Each action's path, its name in the audit trail, and what it does.
ACTIONS: list[tuple[str, str, Action]] = [
    ("/deliveries/{delivery_id}/retry", "retry-delivery", retry_delivery),
    ("/jobs/{job_id}/rerun", "rerun-job", rerun),
    ("/jobs/{job_id}/resend", "resend-results", resend),
    ("/acknowledge/{kind}/{object_id}", "acknowledge", acknowledge),
    ("/destinations/retry", "bulk-retry", bulk_retry),
    ("/destinations/pause", "pause-destination", pause_destination(True)),
    ("/destinations/resume", "resume-destination", pause_destination(False)),
    ("/routing/pause", "pause-routing", pause_routing(True)),
    ("/routing/resume", "resume-routing", pause_routing(False)),
]


def routes(console: Console) -> list[Route]:
    """Every action, as a POST that needs the operator role."""
    return [
        Route(path, page(console, audited(name, run), Role.OPERATOR), methods=["POST"])
        for path, name, run in ACTIONS
    ]
