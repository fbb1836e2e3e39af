"""Logging in (throttled, audited) and out."""

from __future__ import annotations

from sqlalchemy import select
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from core.db.models import User
from web.console import Console, Ctx, page, render, safe_back
from web.security import new_csrf_token, verify_password


def login_form(ctx: Ctx) -> Response:
    """The login page; a logged-in user goes to the overview."""
    if ctx.user is not None:
        return RedirectResponse("/", status_code=303)
    return render(ctx, "login.html", next=safe_back(ctx.request.query_params.get("next")))


def login(ctx: Ctx) -> Response:
    """Check the user name and password; every attempt is audited, failures throttled."""
    throttle = ctx.console.throttle
    username = ctx.form.get("username", "")[:64]
    keys = (f"address:{ctx.address}", f"user:{username}")
    wait = throttle.retry_after(*keys)
    if wait > 0:
        ctx.audit("login", username, "throttled")
        error = f"Too many failed logins: try again in {wait:.0f} s."
        return render(ctx, "login.html", status=429, error=error, next="/")
    user = ctx.db.scalar(select(User).where(User.username == username))
    if not verify_password(user.password_hash if user else None, ctx.form.get("password", "")):
        throttle.failed(*keys)
        ctx.audit("login", username, "failed")
        return render(ctx, "login.html", status=401, error="Wrong user name or password.", next="/")
    throttle.succeeded(*keys)
    ctx.request.session.clear()
    ctx.request.session.update({"uid": user.id, "csrf": new_csrf_token()})
    ctx.user = user
    ctx.audit("login", username, "ok")
    return RedirectResponse(safe_back(ctx.form.get("next")), status_code=303)


def logout(ctx: Ctx) -> Response:
    """End the session (audited)."""
    ctx.audit("logout", ctx.user.username if ctx.user else None, "ok")
    ctx.request.session.clear()
    return RedirectResponse("/login", status_code=303)


def routes(console: Console) -> list[Route]:
    """The login page, logging in and out."""
    return [
        Route("/login", page(console, login_form, None), methods=["GET"]),
        Route("/login", page(console, login, None), methods=["POST"]),
        Route("/logout", page(console, logout), methods=["POST"]),
    ]
