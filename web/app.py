"""The console's web application: its pages, ``/metrics``, security headers and error pages.

Every page needs a logged-in user; actions need the operator role, user
management the admin role (see :mod:`web.console` for login, roles, CSRF and
forms, :mod:`web.pages` for the pages).  Errors answer a short page with a
4xx status, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from core.config import Settings
from core.db.session import make_engine, make_session_factory
from web.actions import Actions
from web.console import Console, Refused
from web.metrics import CachedMetrics, registry_for
from web.pages import admin, browse, login, operations, toolbox
from web.security import CSRF_FIELD, LoginThrottle, secret_key

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent

#: Sent with every answer: only the console's own scripts and styles, no framing, and no
#: Referer (URLs carry search terms such as accession numbers).
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Pass the request on; add the headers to the response's start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)


def _console(settings: Settings, actions: Actions | None) -> Console:
    """What the pages share; without ``actions``, its own engine, Celery app and dispatcher."""
    if actions is None:
        from scheduler.dispatch import Dispatcher
        from worker.celery_app import create_app as create_celery

        factory = make_session_factory(make_engine(settings.effective_database_url))
        actions = Actions(Dispatcher(create_celery(settings), factory, settings))
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["CSRF_FIELD"] = CSRF_FIELD
    return Console(
        settings=settings,
        session_factory=actions.session_factory,
        actions=actions,
        throttle=LoginThrottle(settings.web_login_attempts, settings.web_login_window_seconds),
        templates=templates,
    )


def _plumbing(console: Console) -> list[BaseRoute]:
    """``/metrics`` (no login: scraped by Prometheus), ``/healthz`` and the static files."""
    registry = registry_for(console.settings, console.session_factory, console.trend)
    metrics = CachedMetrics(registry, console.settings.metrics_cache_seconds)

    async def metrics_endpoint(_request: Request) -> Response:
        text = await run_in_threadpool(metrics.render)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    return [
        Route("/metrics", metrics_endpoint),
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]


def _error_handlers(
    templates: Jinja2Templates,
) -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    """Short error pages for refusals, HTTP errors and faults (logged without a traceback)."""

    def error_page(request: Request, status: int, message: str) -> Response:
        return templates.TemplateResponse(
            request,
            "error.html",
            {"status": status, "message": message, "user": None, "flash": None},
            status_code=status,
        )

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        return error_page(request, exc.status, str(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_page(request, exc.status_code, str(exc.detail))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("console error on %s: %s", request.url.path, type(exc).__name__)
        return error_page(request, 500, "internal error: see the console's log")

    return {Refused: refused, HTTPException: http_error, Exception: server_error}


def create_app(settings: Settings, actions: Actions | None = None) -> Starlette:
    """Build the console for ``settings`` (its own engine, Celery app and dispatcher)."""
    console = _console(settings, actions)
    routes = [
        *login.routes(console),
        *browse.routes(console),
        *toolbox.routes(console),
        *admin.routes(console),
        *operations.routes(console),
        *_plumbing(console),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=secret_key(settings),
                session_cookie="ainode_session",
                max_age=int(settings.web_session_hours * 3600),
                same_site="strict",
            ),
        ],
        exception_handlers=_error_handlers(console.templates),
    )
