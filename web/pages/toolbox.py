"""The Tools page: C-ECHO a destination, test the routing rules, the self-test."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from core.db.models import Role
from web import tools
from web.console import Console, Ctx, Refused, page, render, row_id


def tools_page(ctx: Ctx, **outcome: Any) -> Response:
    """The Tools page, with the ``outcome`` of the tool just used."""
    settings = ctx.settings
    return render(
        ctx,
        "tools.html",
        destinations=[str(d) for d in settings.destinations],
        rules=settings.routing_rules,
        **{"verdicts": None, "series": None, "echo": None, "selftest": None, **outcome},
    )


def rule_test(ctx: Ctx) -> Response:
    """Which routing rule matches a received series, and why each other does not."""
    series_id = row_id(ctx.request.query_params.get("series"), "series")
    series = tools.series_by_id(ctx.db, series_id)
    if series is None:
        raise Refused(404, f"no series {series_id}")
    verdicts = tools.rule_verdicts(ctx.settings.routing_rules, series)
    return tools_page(ctx, verdicts=verdicts, series=series)


def echo_action(ctx: Ctx) -> Response:
    """C-ECHO a configured destination (audited)."""
    name = ctx.form.get("destination", "")
    configured = {str(d): d for d in ctx.settings.destinations}
    if name not in configured:
        raise Refused(404, f"unknown destination {name!r}")
    result = tools.echo(configured[name], ctx.settings)
    ctx.audit("echo", name, "ok" if result.ok else "failed", result.detail)
    return tools_page(ctx, echo=(name, result))


def selftest_action(ctx: Ctx) -> Response:
    """Send a phantom through the node's own SCP (audited)."""
    result = tools.self_test(ctx.settings)
    outcome = "ok" if result.sent and not result.failed else "failed"
    ctx.audit("self-test", result.study_instance_uid, outcome, f"{result.sent} sent")
    return tools_page(ctx, selftest=result)


def routes(console: Console) -> list[Route]:
    """The Tools page and its tools (those that send something need the operator role)."""
    return [
        Route("/tools", page(console, tools_page)),
        Route("/tools/rules", page(console, rule_test)),
        Route("/tools/echo", page(console, echo_action, Role.OPERATOR), methods=["POST"]),
        Route("/tools/selftest", page(console, selftest_action, Role.OPERATOR), methods=["POST"]),
    ]
