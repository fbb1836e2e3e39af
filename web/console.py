"""What every page of the console shares: the request context, login, roles, CSRF, forms.

:func:`page` wraps a synchronous handler of a :class:`Ctx` into a Starlette
endpoint: it reads the url-encoded form of a POST (at most
:data:`MAX_FORM_BYTES`), opens the request's database session, loads the
user, checks the role and the CSRF token (auditing refusals) and runs the
handler in a thread.  A handler refuses a request by raising :class:`Refused`
with its HTTP status; the application answers it with a short error page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from core.config import Settings
from core.db.models import Role, User
from core.db.session import session_scope
from web import audit, queries
from web.actions import Actions
from web.overview import DiskTrend
from web.security import CSRF_FIELD, LoginThrottle, csrf_matches, new_csrf_token

MAX_FORM_BYTES = 16 * 1024
RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}
FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass
class Console:
    """What every request handler shares: settings, database, actions, throttling, templates."""

    settings: Settings
    session_factory: sessionmaker[Session]
    actions: Actions
    throttle: LoginThrottle
    templates: Jinja2Templates
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
    def settings(self) -> Settings:
        """The node's settings."""
        return self.console.settings

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


def render(ctx: Ctx, name: str, status: int = 200, **context: Any) -> Response:
    """The template ``name`` with what every page shows (user, roles, CSRF token, flash)."""
    flash = ctx.request.session.pop("flash", None)
    return ctx.console.templates.TemplateResponse(
        ctx.request,
        name,
        {
            "user": ctx.user,
            "can_act": ctx.user is not None and RANK[ctx.user.role] >= RANK[Role.OPERATOR],
            "is_admin": ctx.user is not None and ctx.user.role == Role.ADMIN,
            "csrf": ctx.request.session.get("csrf"),
            "flash": flash,
            "settings": ctx.settings,
            **context,
        },
        status_code=status,
    )


def safe_back(target: str | None, default: str = "/") -> str:
    """A local path to go back to (never another site)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def row_id(value: str | None, what: str) -> int:
    """A row id from the path or query, or a 404 naming what was asked for."""
    try:
        parsed = queries.parse_id(value)
    except queries.FilterError:
        parsed = None
    if parsed is None:
        raise Refused(404, f"unknown {what} {(value or '')[:20]!r}")
    return parsed


def before_id(value: str | None) -> int | None:
    """The ``before`` id of a list page, or a 400."""
    try:
        return queries.parse_id(value)
    except queries.FilterError as exc:
        raise Refused(400, f"before: {exc}") from None


async def _read_form(request: Request) -> dict[str, str]:
    """The url-encoded form of a POST, refused when too large or of another type."""
    declared = request.headers.get("content-length", "0")
    digits = declared.isascii() and declared.isdigit() and len(declared) <= 9
    if not digits or int(declared) > MAX_FORM_BYTES:
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
