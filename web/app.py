"""The console's web application: routes, login, roles, CSRF and error pages.

Every page needs a logged-in user; actions need the operator role, user
management the admin role.  Every POST carries the session's CSRF token and
at most :data:`MAX_FORM_BYTES` of url-encoded form; every action and login is
written to the audit trail.  Errors answer a short page with a 4xx status,
never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from core.config import Destination, Settings
from core.control import DESTINATION_PREFIX, ROUTING, paused_flags
from core.db.models import Role, User
from core.db.session import make_engine, make_session_factory, session_scope
from web import audit, queries, tools
from web.actions import ActionError, Actions
from web.metrics import CachedMetrics, registry_for
from web.overview import DiskTrend, overview
from web.security import (
    CSRF_FIELD,
    LoginThrottle,
    csrf_matches,
    new_csrf_token,
    secret_key,
    verify_password,
)
from web.users import UserError, add_user, list_users, parse_role, remove_user

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
MAX_FORM_BYTES = 16 * 1024
RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}
FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass
class Console:
    """What every request handler shares: settings, database, actions, throttling."""

    settings: Settings
    session_factory: sessionmaker[Session]
    actions: Actions
    throttle: LoginThrottle
    trend: DiskTrend = field(default_factory=DiskTrend)


@dataclass
class Ctx:
    """One request as a handler sees it: the database session, the user, the form."""

    request: Request
    db: Session
    user: User | None
    form: dict[str, str]
    console: Console

    @property
    def address(self) -> str | None:
        """The client's address (for the audit trail)."""
        return self.request.client.host if self.request.client else None

    def audit(self, action: str, obj: str | None, outcome: str, detail: str | None = None) -> None:
        """Record an audit event in this request's transaction."""
        audit.record(
            self.db,
            username=self.user.username if self.user else self.form.get("username"),
            action=action,
            obj=obj,
            outcome=outcome,
            address=self.address,
            detail=detail,
        )

    def flash(self, message: str) -> None:
        """A message shown once on the next page."""
        self.request.session["flash"] = message


Handler = Callable[[Ctx], Response]


class Refused(Exception):
    """A request refused with an HTTP status and a message for the error page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


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


def _safe_back(target: str | None, default: str = "/") -> str:
    """A local path to go back to (never another site)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


async def _read_form(request: Request) -> dict[str, str]:
    """The url-encoded form of a POST, refused when too large or of another type."""
    declared = request.headers.get("content-length")
    too_long = declared is not None and (len(declared) > 9 or not declared.isdigit())
    if too_long or (declared is not None and int(declared) > MAX_FORM_BYTES):
        raise Refused(413, f"form larger than {MAX_FORM_BYTES} bytes")
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Refused(413, f"form larger than {MAX_FORM_BYTES} bytes")
    if not body:
        return {}
    if content_type != FORM_TYPE:
        raise Refused(415, f"forms are sent as {FORM_TYPE}")
    try:
        form = dict(parse_qsl(body.decode("utf-8"), max_num_fields=50, strict_parsing=True))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused(400, f"malformed form: {exc}") from None
    if any("\x00" in key or "\x00" in value for key, value in form.items()):
        raise Refused(400, "NUL characters are not accepted")
    return form


def _load_user(db: Session, request: Request) -> User | None:
    user_id = request.session.get("uid")
    if not isinstance(user_id, int):
        return None
    return db.get(User, user_id)


def page(console: Console, handler: Handler, role: Role | None = Role.VIEWER) -> Any:
    """Wrap a synchronous handler: session, login and role checks, CSRF, audit of refusals.

    ``role`` None means no login needed (the login page itself).
    """

    async def endpoint(request: Request) -> Response:
        if "\x00" in unquote(str(request.url)):
            raise Refused(400, "NUL characters are not accepted")
        form: dict[str, str] = {}
        if request.method == "POST":
            form = await _read_form(request)
        request.session.setdefault("csrf", new_csrf_token())
        return await run_in_threadpool(_run, request, form)

    def _run(request: Request, form: dict[str, str]) -> Response:
        with session_scope(console.session_factory) as db:
            ctx = Ctx(request, db, _load_user(db, request), form, console)
            try:
                return _refusal(ctx, role) or handler(ctx)
            except Refused as exc:
                refused = exc  # raised after the commit: the refusal's audit event is kept
        raise refused

    return endpoint


def _refusal(ctx: Ctx, role: Role | None) -> Response | None:
    """A response refusing the request, or None when it may go on."""
    request = ctx.request
    posting = request.method == "POST"
    if posting and not csrf_matches(request.session.get("csrf"), ctx.form.get(CSRF_FIELD)):
        ctx.audit("csrf", request.url.path, "refused", "missing or wrong CSRF token")
        raise Refused(403, "missing or wrong CSRF token: reload the page and try again")
    if role is None:
        return None
    if ctx.user is None:
        if posting:
            raise Refused(401, "log in first")
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
    if RANK[ctx.user.role] < RANK[role]:
        if posting:
            ctx.audit(request.url.path, None, "forbidden", f"needs role {role.value}")
        raise Refused(403, f"this needs the {role.value} role")
    return None


def _int(value: str | None, what: str) -> int:
    """A row id from the path or query, or a 404 naming what was asked for."""
    try:
        parsed = queries.parse_id(value)
    except queries.FilterError:
        parsed = None
    if parsed is None:
        raise Refused(404, f"unknown {what} {(value or '')[:20]!r}")
    return parsed


def _before(value: str | None) -> int | None:
    """The ``before`` id of a list page, or a 400."""
    try:
        return queries.parse_id(value)
    except queries.FilterError as exc:
        raise Refused(400, f"before: {exc}") from None


def create_app(settings: Settings, actions: Actions | None = None) -> Starlette:
    """Build the console for ``settings`` (its own engine, Celery app and dispatcher)."""
    if actions is None:
        from scheduler.dispatch import Dispatcher
        from worker.celery_app import create_app as create_celery

        factory = make_session_factory(make_engine(settings.effective_database_url))
        actions = Actions(Dispatcher(create_celery(settings), factory, settings))
    console = Console(
        settings=settings,
        session_factory=actions.session_factory,
        actions=actions,
        throttle=LoginThrottle(settings.web_login_attempts, settings.web_login_window_seconds),
    )
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["CSRF_FIELD"] = CSRF_FIELD
    metrics = CachedMetrics(
        registry_for(settings, console.session_factory, console.trend),
        settings.metrics_cache_seconds,
    )

    def render(ctx: Ctx, name: str, status: int = 200, **context: Any) -> Response:
        flash = ctx.request.session.pop("flash", None)
        return templates.TemplateResponse(
            ctx.request,
            name,
            {
                "user": ctx.user,
                "can_act": ctx.user is not None and RANK[ctx.user.role] >= 1,
                "is_admin": ctx.user is not None and ctx.user.role == Role.ADMIN,
                "csrf": ctx.request.session.get("csrf"),
                "flash": flash,
                "settings": settings,
                **context,
            },
            status_code=status,
        )

    # ------------------------------------------------------------------ login
    def login_form(ctx: Ctx) -> Response:
        if ctx.user is not None:
            return RedirectResponse("/", status_code=303)
        return render(ctx, "login.html", next=_safe_back(ctx.request.query_params.get("next")))

    def login(ctx: Ctx) -> Response:
        username = ctx.form.get("username", "")[:64]
        keys = (f"address:{ctx.address}", f"user:{username}")
        wait = console.throttle.retry_after(*keys)
        if wait > 0:
            ctx.audit("login", username, "throttled")
            return render(
                ctx,
                "login.html",
                status=429,
                error=f"Too many failed logins: try again in {wait:.0f} s.",
                next="/",
            )
        user = ctx.db.scalar(select(User).where(User.username == username))
        if not verify_password(user.password_hash if user else None, ctx.form.get("password", "")):
            console.throttle.failed(*keys)
            ctx.audit("login", username, "failed")
            return render(
                ctx, "login.html", status=401, error="Wrong user name or password.", next="/"
            )
        console.throttle.succeeded(*keys)
        ctx.request.session.clear()
        ctx.request.session.update({"uid": user.id, "csrf": new_csrf_token()})
        ctx.user = user
        ctx.audit("login", username, "ok")
        return RedirectResponse(_safe_back(ctx.form.get("next")), status_code=303)

    def logout(ctx: Ctx) -> Response:
        ctx.audit("logout", ctx.user.username if ctx.user else None, "ok")
        ctx.request.session.clear()
        return RedirectResponse("/login", status_code=303)

    # ------------------------------------------------------------------ pages
    def overview_page(ctx: Ctx) -> Response:
        fragment = ctx.request.headers.get("hx-request") == "true"
        name = "overview_panel.html" if fragment else "overview.html"
        return render(ctx, name, o=overview(ctx.db, settings, console.trend))

    def jobs_page(ctx: Ctx) -> Response:
        try:
            filters = queries.JobFilters.parse(dict(ctx.request.query_params))
        except queries.FilterError as exc:
            raise Refused(400, str(exc)) from None
        jobs = queries.job_list(ctx.db, filters, settings.web_page_size)
        summaries = queries.delivery_summaries(ctx.db, [job.id for job in jobs])
        more = len(jobs) == settings.web_page_size
        return render(
            ctx,
            "jobs.html",
            jobs=jobs,
            summaries=summaries,
            filters=filters,
            next_page=filters.query_string(before=jobs[-1].id) if more else None,
            destinations=sorted({str(d) for d in settings.destinations}),
        )

    def job_page(ctx: Ctx) -> Response:
        job_id = _int(ctx.request.path_params["job_id"], "job")
        story = queries.job_story(ctx.db, job_id)
        if story is None:
            raise Refused(404, f"no job {job_id}")
        return render(ctx, "job.html", s=story, job=story.job)

    def studies_page(ctx: Ctx) -> Response:
        params = ctx.request.query_params
        try:
            studies = queries.study_list(
                ctx.db,
                params.get("state") or None,
                (params.get("q") or "").strip()[:64] or None,
                _before(params.get("before")),
                settings.web_page_size,
            )
        except queries.FilterError as exc:
            raise Refused(400, str(exc)) from None
        more = len(studies) == settings.web_page_size
        return render(
            ctx,
            "studies.html",
            studies=studies,
            state=params.get("state", ""),
            q=params.get("q", ""),
            next_before=studies[-1].id if more else None,
        )

    def destinations_page(ctx: Ctx) -> Response:
        counts = queries.destination_counts(ctx.db)
        flags = paused_flags(ctx.db)
        configured = {str(d) for d in settings.destinations}
        rows = [
            {
                "name": name,
                "configured": name in configured,
                "paused": f"{DESTINATION_PREFIX}{name}" in flags,
                "counts": counts.get(name, {}),
            }
            for name in sorted(configured | set(counts))
        ]
        return render(
            ctx, "destinations.html", rows=rows, routing_paused=ROUTING in flags, echo=None
        )

    def tools_page(ctx: Ctx, **extra: Any) -> Response:
        return render(
            ctx,
            "tools.html",
            destinations=[str(d) for d in settings.destinations],
            rules=settings.routing_rules,
            **{"verdicts": None, "series": None, "echo": None, "selftest": None, **extra},
        )

    def rule_test(ctx: Ctx) -> Response:
        series_id = _int(ctx.request.query_params.get("series"), "series")
        series = tools.series_by_id(ctx.db, series_id)
        if series is None:
            raise Refused(404, f"no series {series_id}")
        verdicts = tools.rule_verdicts(settings.routing_rules, series)
        return tools_page(ctx, verdicts=verdicts, series=series)

    def echo_action(ctx: Ctx) -> Response:
        name = ctx.form.get("destination", "")
        configured = {str(d): d for d in settings.destinations}
        if name not in configured:
            raise Refused(404, f"unknown destination {name!r}")
        result = tools.echo(configured[name], settings)
        ctx.audit("echo", name, "ok" if result.ok else "failed", result.detail)
        return tools_page(ctx, echo=(name, result))

    def selftest_action(ctx: Ctx) -> Response:
        result = tools.self_test(settings)
        outcome = "ok" if result.sent and not result.failed else "failed"
        ctx.audit("self-test", result.study_instance_uid, outcome, f"{result.sent} sent")
        return tools_page(ctx, selftest=result)

    def audit_page(ctx: Ctx) -> Response:
        before = _before(ctx.request.query_params.get("before"))
        events = audit.recent_events(ctx.db, settings.web_page_size, before)
        more = len(events) == settings.web_page_size
        return render(ctx, "audit.html", events=events, next_before=events[-1].id if more else None)

    def audit_csv(ctx: Ctx) -> Response:
        events = audit.recent_events(ctx.db, 1_000_000)
        ctx.audit("audit-export", None, "ok", f"{len(events)} events")
        return Response(
            audit.to_csv(events),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="ainode-audit.csv"'},
        )

    def users_page(ctx: Ctx) -> Response:
        return render(ctx, "users.html", users=list_users(ctx.db), roles=list(Role))

    def user_add(ctx: Ctx) -> Response:
        username = ctx.form.get("username", "")
        try:
            add_user(
                ctx.db, username, ctx.form.get("password", ""), parse_role(ctx.form.get("role", ""))
            )
        except UserError as exc:
            ctx.audit("user-add", username, "refused", str(exc))
            raise Refused(400, str(exc)) from None
        ctx.audit("user-add", username, "ok", ctx.form.get("role"))
        ctx.flash(f"user {username} added")
        return RedirectResponse("/users", status_code=303)

    def user_remove(ctx: Ctx) -> Response:
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

    # ---------------------------------------------------------------- actions
    def action(name: str, run: Callable[[Ctx], tuple[str, str]]) -> Handler:
        """An audited operator action that redirects back with a message."""

        def handler(ctx: Ctx) -> Response:
            try:
                obj, message = run(ctx)
            except ActionError as exc:
                ctx.audit(name, ctx.request.url.path, "refused", str(exc))
                raise Refused(exc.status, str(exc)) from None
            ctx.audit(name, obj, "ok", message)
            ctx.flash(message)
            return RedirectResponse(_safe_back(ctx.form.get("back")), status_code=303)

        return handler

    def path_id(ctx: Ctx, key: str, what: str) -> int:
        return _int(ctx.request.path_params[key], what)

    def retry_delivery(ctx: Ctx) -> tuple[str, str]:
        delivery_id = path_id(ctx, "delivery_id", "delivery")
        actions.retry_delivery(delivery_id)
        return f"delivery {delivery_id}", f"delivery {delivery_id} queued again"

    def rerun(ctx: Ctx) -> tuple[str, str]:
        job_id = path_id(ctx, "job_id", "job")
        actions.replay(job_id, rerun=True)
        return f"job {job_id}", f"job {job_id} queued to run again"

    def resend(ctx: Ctx) -> tuple[str, str]:
        job_id = path_id(ctx, "job_id", "job")
        count = actions.replay(job_id, rerun=False)
        return f"job {job_id}", f"{count} deliveries of job {job_id} queued again"

    def acknowledge(ctx: Ctx) -> tuple[str, str]:
        kind = ctx.request.path_params["kind"]
        object_id = path_id(ctx, "object_id", kind)
        assert ctx.user is not None
        actions.acknowledge(kind, object_id, ctx.user.username)
        return f"{kind} {object_id}", f"{kind} {object_id} acknowledged"

    def destination_name(ctx: Ctx) -> str:
        name = ctx.form.get("destination", "")
        try:
            Destination.parse(name)
        except ValueError:
            raise ActionError(400, f"not a destination: {name!r}") from None
        return name

    def bulk_retry(ctx: Ctx) -> tuple[str, str]:
        name = destination_name(ctx)
        count = actions.bulk_retry(name)
        return name, f"{count} failed deliveries to {name} queued again"

    def pause_destination(paused: bool) -> Callable[[Ctx], tuple[str, str]]:
        def run(ctx: Ctx) -> tuple[str, str]:
            name = destination_name(ctx)
            assert ctx.user is not None
            actions.pause_destination(name, paused, ctx.user.username)
            return name, f"deliveries to {name} {'paused' if paused else 'resumed'}"

        return run

    def pause_routing(paused: bool) -> Callable[[Ctx], tuple[str, str]]:
        def run(ctx: Ctx) -> tuple[str, str]:
            assert ctx.user is not None
            actions.pause_routing(paused, ctx.user.username)
            return "routing", f"routing {'paused: received studies wait' if paused else 'resumed'}"

        return run

    # ---------------------------------------------------------------- plumbing
    async def metrics_endpoint(_request: Request) -> Response:
        text = await run_in_threadpool(metrics.render)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    operator = Role.OPERATOR
    operator_actions: list[tuple[str, str, Callable[[Ctx], tuple[str, str]]]] = [
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
    routes = [
        Route("/login", page(console, login_form, None), methods=["GET"]),
        Route("/login", page(console, login, None), methods=["POST"]),
        Route("/logout", page(console, logout), methods=["POST"]),
        Route("/", page(console, overview_page)),
        Route("/jobs", page(console, jobs_page)),
        Route("/jobs/{job_id}", page(console, job_page)),
        Route("/studies", page(console, studies_page)),
        Route("/destinations", page(console, destinations_page)),
        Route("/tools", page(console, tools_page)),
        Route("/tools/rules", page(console, rule_test)),
        Route("/tools/echo", page(console, echo_action, operator), methods=["POST"]),
        Route("/tools/selftest", page(console, selftest_action, operator), methods=["POST"]),
        Route("/audit", page(console, audit_page)),
        Route("/audit.csv", page(console, audit_csv)),
        Route("/users", page(console, users_page, Role.ADMIN)),
        Route("/users", page(console, user_add, Role.ADMIN), methods=["POST"]),
        Route("/users/{username}/remove", page(console, user_remove, Role.ADMIN), methods=["POST"]),
        *(
            Route(path, page(console, action(name, run), operator), methods=["POST"])
            for path, name, run in operator_actions
        ),
        Route("/metrics", metrics_endpoint),
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]

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

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        Refused: refused,
        HTTPException: http_error,
        Exception: server_error,
    }
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
        exception_handlers=handlers,
    )
