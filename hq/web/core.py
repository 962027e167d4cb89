"""What every page of the console shares: the database transaction of a request, the signed-in
account, CSRF checks, permissions, templates, languages and messages after a change.

A page is a plain function of a :class:`Page` returning a response; :meth:`Console.view`
wraps it. A request that changes something is a POST (never a GET), must name the
permission it needs, and must carry the session's CSRF token; a refusal from a service
(:class:`edge.domain.errors.KioskError`) rolls the transaction back and comes back to the
page as a one-line message.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

import jinja2
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from edge.domain.errors import KioskError, NotFound
from edge.protocol import BlocklistUpdate, Message
from hq import accounts
from hq.accounts import AccountRow, Permission
from hq.audit import Actor
from hq.catalogue import Publisher
from hq.enrol import EnrolmentDesk
from hq.service import HqConfig, open_hq_engine
from hq.web.i18n import N_, Translate, pick, translator

if TYPE_CHECKING:
    from hq.web.member_page import MemberPageSettings

SESSION_COOKIE = "mck_session"
LOGIN_COOKIE = "mck_login"
FLASH_COOKIE = "mck_flash"
LANG_COOKIE = "lang"
TEMPLATES = Path(__file__).parent / "templates"
MAX_FORM_FIELDS = 200
MAX_UPLOAD = 256 * 1024 * 1024

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def local_path(text: str | None, default: str = "/") -> str:
    """``text`` when it is a path on this site (never another site's address), else default."""
    if not text:
        return default
    parts = urlsplit(text)
    if parts.scheme or parts.netloc or not parts.path.startswith("/"):
        return default
    if parts.path.startswith("//") or "\\" in text:
        return default
    return parts.path + (f"?{parts.query}" if parts.query else "")


@dataclass
class Page:
    """One request to a page: its transaction, who asks, in which language."""

    console: Console
    request: Request
    session: Session
    user: AccountRow
    csrf: str
    lang: str
    t: Translate
    now: datetime
    form: FormData | None = None
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def actor(self) -> Actor:
        return Actor(self.user.name, "web")

    def field(self, name: str, default: str = "") -> str:
        value = self.form.get(name) if self.form is not None else None
        return value if isinstance(value, str) else default

    def query(self, name: str, default: str = "") -> str:
        return self.request.query_params.get(name, default)

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        return self.console.render(self, template, status, **values)

    def done(self, message: str, to: str | None = None) -> RedirectResponse:
        """After a change: to ``to``, else back to the page the form was on, with a message
        saying what was done."""
        return redirect(to or local_path(self.field("back"), came_from(self.request)), message)


def came_from(request: Request) -> str:
    """The console's page a form was sent from (its Referer, when it is this console)."""
    referer = request.headers.get("referer", "")
    parts = urlsplit(referer)
    if parts.netloc and parts.netloc != request.headers.get("host"):
        return "/fleet"
    return local_path(parts.path + (f"?{parts.query}" if parts.query else ""), "/fleet")


def redirect(to: str, message: str = "", kind: str = "ok") -> RedirectResponse:
    response = RedirectResponse(to, status_code=303)
    if message:
        response.set_cookie(
            FLASH_COOKIE,
            quote(json.dumps({"kind": kind, "text": message}, ensure_ascii=False)),
            max_age=60,
            httponly=True,
            samesite="strict",
        )
    return response


def read_flash(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        value = json.loads(unquote(raw))
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        return None
    return {"kind": "error" if value.get("kind") == "error" else "ok", "text": value["text"][:500]}


Handler = Callable[[Page], Response]
Endpoint = Callable[[Request], Awaitable[Response]]


class Console:
    """The console's shared state: HQ's settings and database, the clock and templates."""

    def __init__(
        self,
        config: HqConfig,
        engine: Engine | None = None,
        *,
        clock: Clock = _utc_now,
        secure_cookies: bool = False,
        stream_every_s: float = 3.0,
        desk: EnrolmentDesk | None = None,
        enrol_dir: Path | None = None,
        phone_lookup: Callable[[str], str] | None = None,
        publish: Callable[[str, Message], None] | None = None,
        publisher: Publisher | None = None,
        metrics_token: str = "",
        member_page: MemberPageSettings | None = None,
    ) -> None:
        self.config = config
        self.engine = engine or open_hq_engine(config.database_url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.clock = clock
        self.secure_cookies = secure_cookies
        self.stream_every_s = stream_every_s
        self.desk = desk  # the enrolment desk, when HQ's CA and keys are at hand
        self.enrol_dir = enrol_dir or config.backups_path().parent / "enrolments"
        self.phone_lookup = phone_lookup  # the chain's lookup hash, for phone searches
        self.publish = publish or self._publish_once  # (topic, message) to the broker
        self.publisher = publisher  # signs and pushes catalogue and rules versions
        self.metrics_token = metrics_token  # /metrics asks for it as a bearer token when set
        if member_page is None:
            from hq.web.member_page import MemberPageSettings

            member_page = MemberPageSettings()
        self.member_page = member_page  # the members' phone page (/m): its keys and sender
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = _when
        self.env.filters["ago"] = _ago
        self.env.filters["thousands"] = lambda n: "—" if n is None else f"{n:,}"

    def _publish_once(self, topic: str, message: Message) -> None:
        from hq.commands import publish_once

        expiry = None
        if isinstance(message, BlocklistUpdate):
            expiry = int((message.expires_at - message.issued_at).total_seconds())
        publish_once(self.config, topic, message, expiry_s=expiry)

    @contextmanager
    def tx(self) -> Iterator[Session]:
        with self.sessions.begin() as session:
            yield session

    # -- rendering ---------------------------------------------------------------------------
    def render(
        self, page: Page | None, template: str, status: int = 200, **values: Any
    ) -> HTMLResponse:
        lang = page.lang if page else "zh"
        t = page.t if page else translator(lang)
        request = page.request if page else values.pop("request")
        context: dict[str, Any] = {
            "_": t,
            "lang": lang,
            "user": page.user if page else None,
            "csrf": page.csrf if page else values.pop("login_csrf", ""),
            "can": (lambda p: page.user.can(Permission(p))) if page else (lambda p: False),
            "now": page.now if page else self.clock(),
            "path": request.url.path,
            "here": local_path(
                str(request.url.path) + (f"?{request.url.query}" if request.url.query else "")
            ),
            "flash": read_flash(request),
            "nav": NAV,
        }
        context.update(values)
        html = self.env.get_template(template).render(context)
        response = HTMLResponse(html, status_code=status)
        if context["flash"] is not None:
            response.delete_cookie(FLASH_COOKIE)
        return response

    def language(self, request: Request) -> str:
        return pick(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))

    def set_session_cookie(self, response: Response, token: str) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=self.secure_cookies,
            path="/",
        )

    # -- pages -------------------------------------------------------------------------------
    def view(self, handler: Handler, permission: Permission | None = None) -> Endpoint:
        """A page anyone signed in may see (or only those with ``permission``)."""
        return self._endpoint(handler, permission, changes=False)

    def change(self, handler: Handler, permission: Permission | None) -> Endpoint:
        """A POST that changes something: CSRF-checked, and only with ``permission`` (None:
        only for what concerns the signed-in person alone, such as signing out)."""
        return self._endpoint(handler, permission, changes=True)

    def _endpoint(self, handler: Handler, permission: Permission | None, changes: bool) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            form: FormData | None = None
            if request.method == "POST":
                try:
                    form = await request.form(
                        max_files=4, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_UPLOAD
                    )
                except Exception:  # a malformed body: nothing is changed
                    return self.refused(request, 400, N_("The form could not be read."))
            try:
                return await run_in_threadpool(
                    self._run, handler, request, form, permission, changes
                )
            finally:
                if form is not None:
                    await form.close()

        return endpoint

    def refused(self, request: Request, status: int, text: str) -> Response:
        t = translator(self.language(request))
        return self.render(
            None, "refused.html", status, request=request, code=status, reason=t(text)
        )

    def _run(
        self,
        handler: Handler,
        request: Request,
        form: FormData | None,
        permission: Permission | None,
        changes: bool,
    ) -> Response:
        lang = self.language(request)
        t = translator(lang)
        back = came_from(request) if request.method == "POST" else request.url.path
        try:
            # Who asks, in a transaction of its own (it may note the session's use), so the
            # page's own work, or a desk that keeps its own transactions, never waits on it.
            with self.tx() as session:
                now = self.clock()
                current = accounts.current(session, request.cookies.get(SESSION_COOKIE, ""), now)
            if current is None:
                if request.method == "GET":
                    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return RedirectResponse(f"/login?next={quote(here)}", status_code=303)
                return self.refused(request, 401, N_("Sign in first."))
            if changes or request.method == "POST":
                sent = (form.get("csrf") if form is not None else None) or request.headers.get(
                    "x-csrf-token", ""
                )
                if not isinstance(sent, str) or not hmac.compare_digest(
                    sent.encode(), current.csrf.encode()
                ):
                    return self.refused(
                        request, 403, N_("This form has expired or did not come from the console.")
                    )
            if permission is not None and not current.account.can(permission):
                return self.refused(request, 403, N_("Your role does not allow this."))
            with self.tx() as session:
                page = Page(
                    self, request, session, current.account, current.csrf, lang, t, now, form
                )
                if form is not None:
                    back = local_path(page.field("back"), back)
                return handler(page)
        except KioskError as exc:
            if request.method != "POST":
                return self.refused(request, 404 if isinstance(exc, NotFound) else 400, exc.message)
            return redirect(back, t(exc.message), "error")


def _when(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime(fmt)


def _ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "—"
    seconds = int(((now or _utc_now()) - value).total_seconds())
    if seconds < 90:
        return f"{max(seconds, 0)} s"
    if seconds < 90 * 60:
        return f"{seconds // 60} min"
    if seconds < 48 * 3600:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


@dataclass(frozen=True)
class NavItem:
    path: str
    label: str
    permission: str | None = None


NAV = (
    NavItem("/fleet", N_("Fleet")),
    NavItem("/alerts", N_("Alerts")),
    NavItem("/enrol", N_("Enrolment")),
    NavItem("/members", N_("Members")),
    NavItem("/catalogue", N_("Catalogue")),
    NavItem("/updates", N_("Updates")),
    NavItem("/reports", N_("Reports")),
    NavItem("/messages", N_("Messages")),
    NavItem("/audit", N_("Audit")),
    NavItem("/accounts", N_("Accounts"), "accounts"),
)


def new_login_token() -> str:
    return secrets.token_urlsafe(24)
