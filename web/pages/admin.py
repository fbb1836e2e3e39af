"""The audit trail (page and CSV export) and user management (admins only)."""

from __future__ import annotations

from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from core.db.models import Role
from web import audit
from web.console import Console, Ctx, Refused, before_id, page, render
from web.users import UserError, add_user, list_users, parse_role, remove_user

#: Most audit events one CSV export holds.
EXPORT_LIMIT = 1_000_000


def audit_page(ctx: Ctx) -> Response:
    """One page of audit events, newest first."""
    size = ctx.settings.web_page_size
    events = audit.recent_events(ctx.db, size, before_id(ctx.request.query_params.get("before")))
    more = len(events) == size
    return render(ctx, "audit.html", events=events, next_before=events[-1].id if more else None)


def audit_csv(ctx: Ctx) -> Response:
    """The audit trail as CSV (the export itself is audited)."""
    events = audit.recent_events(ctx.db, EXPORT_LIMIT)
    ctx.audit("audit-export", None, "ok", f"{len(events)} events")
    return Response(
        audit.to_csv(events),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="ainode-audit.csv"'},
    )


def users_page(ctx: Ctx) -> Response:
    """The console's users and the form to add one."""
    return render(ctx, "users.html", users=list_users(ctx.db), roles=list(Role))


def user_add(ctx: Ctx) -> Response:
    """Add a user (audited, refused ones too)."""
    username = ctx.form.get("username", "")
    try:
        role = parse_role(ctx.form.get("role", ""))
        add_user(ctx.db, username, ctx.form.get("password", ""), role)
    except UserError as exc:
        ctx.audit("user-add", username, "refused", str(exc))
        raise Refused(400, str(exc)) from None
    ctx.audit("user-add", username, "ok", ctx.form.get("role"))
    ctx.flash(f"user {username} added")
    return RedirectResponse("/users", status_code=303)


def user_remove(ctx: Ctx) -> Response:
    """Remove a user other than oneself (audited)."""
    username = ctx.request.path_params["username"]
    if ctx.user is not None and username == ctx.user.username:
        raise Refused(409, "you cannot remove yourself")
    try:
        remove_user(ctx.db, username)
    except UserError as exc:
        raise Refused(404, str(exc)) from None
    ctx.audit("user-remove", username, "ok")
    ctx.flash(f"user {username} removed")
    return RedirectResponse("/users", status_code=303)


def routes(console: Console) -> list[Route]:
    """The audit trail (every user) and user management (admins)."""
    admin = Role.ADMIN
    return [
        Route("/audit", page(console, audit_page)),
        Route("/audit.csv", page(console, audit_csv)),
        Route("/users", page(console, users_page, admin)),
        Route("/users", page(console, user_add, admin), methods=["POST"]),
        Route("/users/{username}/remove", page(console, user_remove, admin), methods=["POST"]),
    ]
