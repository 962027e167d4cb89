"""The console's pages and the ASGI app (``kiosk hq web``)."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import distinct, select
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.domain.corrections import Reason
from edge.domain.errors import InvalidInput, KioskError, NotFound, Refusal
from edge.domain.ids import IdFactory
from edge.domain.merges import OldCards
from edge.protocol import BlocklistUpdate, Topics
from hq import accounts, audit, fleet, member_desk
from hq.accounts import Permission, Role, SignInRefused, parse_role
from hq.audit import record
from hq.enrol import EnrolmentDesk, Issued
from hq.merges import merge_members
from hq.models import Alert, EnrolledDevice, FleetDevice
from hq.web.core import (
    LANG_COOKIE,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Console,
    Page,
    local_path,
    new_login_token,
)
from hq.web.i18n import LANGUAGES, N_, translator
from hq.web.member_page import member_routes as phone_page_routes
from hq.web.messages_page import message_routes
from hq.web.operations import catalogue_routes, update_routes
from hq.web.reports_page import report_routes
from hq.web.sms import sms_routes

STATIC = Path(__file__).parent / "static"

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """Every response: a strict content security policy (no inline script, nothing from
    elsewhere), no framing, no sniffing; pages are not cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, sending)


# -- signing in ------------------------------------------------------------------------------


def login_page(console: Console, request: Request, status: int = 200, **values: Any) -> Response:
    token = request.cookies.get(LOGIN_COOKIE) or new_login_token()
    values.setdefault("error", "")
    values.setdefault("name", "")
    values.setdefault("next", local_path(request.query_params.get("next"), "/fleet"))
    response = console.render(
        None, "login.html", status, request=request, login_csrf=token, **values
    )
    response.set_cookie(
        LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=console.secure_cookies
    )
    return response


def routes(console: Console) -> list[BaseRoute]:
    async def login_get(request: Request) -> Response:
        return login_page(console, request)

    async def login_post(request: Request) -> Response:
        form = await request.form(max_fields=10, max_files=0)
        t = translator(console.language(request))
        sent, expected = str(form.get("csrf", "")), request.cookies.get(LOGIN_COOKIE, "")
        name, password = str(form.get("name", "")), str(form.get("password", ""))
        target = local_path(str(form.get("next", "")), "/fleet")
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            return login_page(
                console,
                request,
                403,
                error=t("This form has expired or did not come from the console."),
                name=name,
                next=target,
            )
        address = request.client.host if request.client else ""

        def sign_in() -> accounts.SignedIn | str:
            refused: SignInRefused | None = None
            with console.tx() as session:  # commits a refusal's count towards the lockout
                old = request.cookies.get(SESSION_COOKIE)
                if old:  # whatever session the browser had ends here
                    accounts.sign_out(session, old, console.clock())
                try:
                    return accounts.sign_in(session, name, password, console.clock(), address)
                except SignInRefused as exc:
                    refused = exc
            if refused.code == "locked":
                until = str(refused.details.get("until", ""))[11:16]
                return t("This account is locked after too many wrong passwords, until") + (
                    f" {until} UTC"
                )
            return t("Wrong account name or password.")

        result = await run_in_threadpool(sign_in)
        if isinstance(result, str):
            return login_page(console, request, 401, error=result, name=name, next=target)
        response = RedirectResponse(target, status_code=303)
        console.set_session_cookie(response, result.token)
        response.delete_cookie(LOGIN_COOKIE)
        return response

    def logout(page: Page) -> Response:
        accounts.sign_out(page.session, page.request.cookies.get(SESSION_COOKIE, ""), page.now)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    async def language(request: Request) -> Response:
        lang = request.path_params["lang"]
        back = local_path(request.query_params.get("back"), "/fleet")
        response = RedirectResponse(back, status_code=303)
        if lang in LANGUAGES:
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax")
        return response

    async def home(request: Request) -> Response:
        return RedirectResponse("/fleet", status_code=303)

    return [
        Route("/", home),
        Route("/login", login_get, methods=["GET"]),
        Route("/login", login_post, methods=["POST"]),
        Route("/logout", console.change(logout, None), methods=["POST"]),
        Route("/lang/{lang}", language),
        *fleet_routes(console),
        *alert_routes(console),
        *audit_routes(console),
        *enrol_routes(console),
        *member_routes(console),
        *catalogue_routes(console),
        *update_routes(console),
        *report_routes(console),
        *account_routes(console),
        *sms_routes(console),
        *message_routes(console),
        *phone_page_routes(console),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


# -- fleet -----------------------------------------------------------------------------------


PAGE_ROWS = 200  # devices a page of the fleet shows


@dataclass(frozen=True)
class FleetFilters:
    q: str = ""
    store: str = ""
    state: str = ""
    health: str = ""
    page: int = 1

    @classmethod
    def of(cls, page: Page | Request) -> FleetFilters:
        params = page.request.query_params if isinstance(page, Page) else page.query_params

        def get(name: str, allowed: tuple[str, ...] | None = None) -> str:
            value = params.get(name, "").strip()[:64]
            return value if allowed is None or value in allowed else ""

        number = params.get("page", "1")
        return cls(
            get("q"),
            get("store"),
            get("state", ("online", "offline", "unknown")),
            get("health", fleet.HEALTH_STATES),
            int(number) if number.isdigit() and 0 < int(number) < 10_000 else 1,
        )

    def query(self, page: int | None = None) -> str:
        values = {k: v for k, v in vars(self).items() if v and k != "page"}
        number = self.page if page is None else page
        if number > 1:
            values["page"] = str(number)
        return urlencode(values)

    def filters(self) -> dict[str, str]:
        return {"store_id": self.store, "state": self.state, "health": self.health, "text": self.q}


PAPER_CODES = {"paper_out": ("failed", "out"), "paper_low": ("degraded", "low")}


def paper_of(device: fleet.DeviceRow) -> tuple[str, str] | None:
    for p in device.peripherals:
        if "print" in p.name:
            return PAPER_CODES.get(p.code, ("ok", "ok") if p.state == "ok" else (p.state, p.state))
    return None


def fleet_routes(console: Console) -> list[BaseRoute]:
    def rows(session: Any, filters: FleetFilters) -> list[fleet.DeviceRow]:
        return fleet.device_rows(
            session,
            None,
            offset=(filters.page - 1) * PAGE_ROWS,
            limit=PAGE_ROWS,
            **filters.filters(),
        )

    def fleet_page(page: Page) -> Response:
        filters = FleetFilters.of(page)
        summary = fleet.summary(page.session, **filters.filters())
        pages = max(1, -(-summary.matching // PAGE_ROWS))
        stores = page.session.scalars(
            select(distinct(FleetDevice.store_id)).order_by(FleetDevice.store_id).limit(5000)
        ).all()
        return page.render(
            "fleet.html",
            devices=rows(page.session, filters),
            filters=filters,
            query=filters.query(),
            summary=summary,
            pages=pages,
            page_links=[(n, filters.query(n)) for n in range(1, pages + 1)],
            stores=stores,
            alerts=fleet.alert_counts(page.session),
            paper_of=paper_of,
        )

    async def stream(request: Request) -> Response:
        """Server-sent events: the fleet table's rows whenever they change."""
        filters = FleetFilters.of(request)
        token = request.cookies.get(SESSION_COOKIE, "")
        lang = console.language(request)
        t = translator(lang)

        def snapshot() -> str | None:
            with console.tx() as session:
                now = console.clock()
                if accounts.current(session, token, now) is None:
                    return None
                template = console.env.get_template("_fleet_rows.html")
                return template.render(
                    devices=rows(session, filters), now=now, _=t, paper_of=paper_of
                )

        first = await run_in_threadpool(snapshot)
        if first is None:
            return Response(status_code=401)

        async def events() -> Any:
            last: str | None = None
            html: str | None = first
            loop = asyncio.get_running_loop()
            ends = loop.time() + 600  # the browser reconnects by itself
            yield "retry: 3000\n\n"
            while html is not None and loop.time() < ends:
                if html != last:
                    yield f"event: fleet\ndata: {json.dumps(html)}\n\n"
                    last = html
                else:
                    yield ": still here\n\n"
                await asyncio.sleep(console.stream_every_s)
                if await request.is_disconnected():
                    return
                html = await run_in_threadpool(snapshot)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    def device_page(page: Page) -> Response:
        device_id = page.request.path_params["device_id"]
        found = [
            d for d in fleet.device_rows(page.session, text=device_id) if d.device_id == device_id
        ]
        if not found:
            raise NotFound(f"no device {device_id}")
        span = RANGES.get(page.query("range", "24h"), RANGES["24h"])
        key = page.query("range", "24h") if page.query("range", "24h") in RANGES else "24h"
        samples = fleet.telemetry_history(page.session, device_id, page.now - span)
        chart_data = {
            "labels": [at.strftime("%m-%d %H:%M") for at, _ in samples],
            "series": {name: [s.get(name) for _, s in samples] for name, _ in CHARTS},
        }
        enrolled = page.session.get(EnrolledDevice, device_id)
        open_alerts = page.session.scalars(
            select(Alert).where(Alert.device_id == device_id, Alert.cleared_at.is_(None))
        ).all()
        return page.render(
            "device.html",
            device=found[0],
            enrolled=enrolled,
            alerts=open_alerts,
            samples=samples,
            chart_data=chart_data,
            charts=CHARTS,
            ranges=[(k, label) for k, label in RANGE_LABELS],
            range=key,
        )

    return [
        Route("/fleet", console.view(fleet_page)),
        Route("/fleet/stream", stream),
        Route("/devices/{device_id}", console.view(device_page)),
    ]


RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
RANGE_LABELS = (
    ("24h", N_("Last 24 hours")),
    ("7d", N_("Last 7 days")),
    ("30d", N_("Last 30 days")),
)
CHARTS = (
    ("outbox_depth", N_("Outbox backlog")),
    ("temperature_c", N_("Temperature (°C)")),
    ("disk_free_pct", N_("Free disk (%)")),
    ("camera_fps", N_("Camera frames per second")),
)


# -- alerts ----------------------------------------------------------------------------------


def alert_routes(console: Console) -> list[BaseRoute]:
    def alerts_page(page: Page) -> Response:
        state = page.query("state", "open")
        state = state if state in fleet.ALERT_STATES else "open"
        kind = page.query("kind")[:32]
        store = page.query("store")[:64].strip()
        kinds = page.session.scalars(select(distinct(Alert.kind)).order_by(Alert.kind)).all()
        return page.render(
            "alerts.html",
            state=state,
            states=fleet.ALERT_STATES,
            counts=fleet.alert_counts(page.session),
            alerts=fleet.alerts(page.session, state, kind, store),
            kinds=kinds,
            kind=kind,
            store=store,
        )

    def acknowledge(page: Page) -> Response:
        raw = page.request.path_params["alert_id"]
        alert = fleet.acknowledge(page.session, int(raw), page.field("note"), page.actor, page.now)
        return page.done(page.t("Alert acknowledged:") + f" {page.t(alert.kind)} {alert.subject}")

    return [
        Route("/alerts", console.view(alerts_page)),
        Route(
            "/alerts/{alert_id:int}/acknowledge",
            console.change(acknowledge, Permission.ALERTS),
            methods=["POST"],
        ),
    ]


# -- enrolment ------------------------------------------------------------------------------


def enrol_routes(console: Console) -> list[BaseRoute]:
    def desk(page: Page) -> EnrolmentDesk:
        if console.desk is None:
            raise Refusal(
                "The enrolment desk is not set up: start the console with HQ's TLS folder "
                "(--tls-dir), where the CA and HQ's keys are.",
                code="no_desk",
            )
        return console.desk.within(page.session)

    def enrol_page(page: Page) -> Response:
        ready = console.desk is not None
        within = console.desk.within(page.session) if console.desk is not None else None
        stores = page.session.scalars(
            select(distinct(FleetDevice.store_id)).order_by(FleetDevice.store_id)
        ).all()
        return page.render(
            "enrol.html",
            ready=ready,
            devices=within.devices() if within else [],
            actions=list(reversed(within.actions()))[:30] if within else [],
            stores=stores,
        )

    def shown(page: Page, issued: Issued) -> Response:
        qr_png = base64.b64encode(issued.qr_path.read_bytes()).decode("ascii")
        return page.render("enrolled.html", issued=issued, qr_png=qr_png)

    def store_of(page: Page) -> str:
        return page.field("store").strip()

    def enrol(page: Page) -> Response:
        issued = desk(page).enrol(
            page.field("qr_text").strip(),
            store_id=store_of(page),
            device_id=page.field("device_id").strip() or None,
            out_dir=console.enrol_dir,
            actor=page.user.name,
        )
        return shown(page, issued)

    def move(page: Page) -> Response:
        issued = desk(page).move(
            page.request.path_params["device_id"],
            page.field("qr_text").strip(),
            store_id=store_of(page),
            out_dir=console.enrol_dir,
            actor=page.user.name,
        )
        return shown(page, issued)

    def replace(page: Page) -> Response:
        issued = desk(page).replace(
            page.request.path_params["device_id"],
            page.field("qr_text").strip(),
            out_dir=console.enrol_dir,
            reason=page.field("reason").strip() or "device replaced",
            actor=page.user.name,
        )
        return shown(page, issued)

    def revoke(page: Page) -> Response:
        device_id = page.request.path_params["device_id"]
        serial = desk(page).revoke(device_id, page.field("reason"), actor=page.user.name)
        return page.done(page.t("Device revoked:") + f" {device_id} ({serial})", "/enrol")

    change = console.change
    return [
        Route("/enrol", console.view(enrol_page), methods=["GET"]),
        Route("/enrol", change(enrol, Permission.FLEET), methods=["POST"]),
        Route("/devices/{device_id}/move", change(move, Permission.FLEET), methods=["POST"]),
        Route("/devices/{device_id}/replace", change(replace, Permission.FLEET), methods=["POST"]),
        Route("/devices/{device_id}/revoke", change(revoke, Permission.FLEET), methods=["POST"]),
    ]


# -- members desk ---------------------------------------------------------------------------

ADJUST_REASONS = tuple(r.value for r in Reason)


def member_routes(console: Console) -> list[BaseRoute]:
    def members_page(page: Page) -> Response:
        q = page.query("q")[:64].strip()
        error = ""
        if q:
            try:
                member_id = member_desk.find(page.session, q, console.phone_lookup)
            except KioskError as exc:
                error = page.t(exc.message)
            else:
                return RedirectResponse(f"/members/{member_id}", status_code=303)
        return page.render(
            "members.html", q=q, error=error, pending=member_desk.pending_adjustments(page.session)
        )

    def member_page(page: Page) -> Response:
        m = member_desk.view(page.session, page.request.path_params["member_id"])
        return page.render(
            "member.html",
            m=m,
            reasons=ADJUST_REASONS,
            large=member_desk.LARGE_ADJUSTMENT,
            settle=-m.balance if m.balance < 0 else 0,
        )

    def member_id(page: Page) -> str:
        return str(page.request.path_params["member_id"])

    def adjust(page: Page) -> Response:
        raw = page.field("points").strip().replace("−", "-").replace("+", "")
        try:
            points = int(raw)
        except ValueError:
            raise InvalidInput("points must be a whole number", code="bad_points") from None
        done = member_desk.adjust(
            page.session,
            member_id(page),
            points,
            page.field("reason"),
            page.field("note"),
            page.actor,
            page.now,
            may_approve=page.user.can(Permission.APPROVE),
        )
        if done.state == "pending":
            return page.done(
                page.t("Waiting for a supervisor's approval:") + f" {done.points:+d}",
                f"/members/{done.member_id}",
            )
        return page.done(
            page.t("Points adjusted:") + f" {done.points:+d}", f"/members/{done.member_id}"
        )

    def decide(approve: bool) -> Callable[[Page], Response]:
        def handler(page: Page) -> Response:
            done = member_desk.decide(
                page.session,
                page.request.path_params["adjustment_id"],
                approve,
                page.actor,
                page.now,
            )
            what = "Adjustment approved:" if approve else "Adjustment rejected:"
            return page.done(page.t(what) + f" {done.member_id} {done.points:+d}", "/members")

        return handler

    def block(page: Page) -> Response:
        card_no, owner = member_desk.block_card(
            page.session,
            page.request.path_params["card_no"],
            page.field("reason"),
            page.actor,
            page.now,
        )
        update = BlocklistUpdate(
            update_id=f"hq-{secrets.token_hex(6)}",
            add=[card_no],
            reason=page.field("reason")[:64] or "hq",
            issued_at=page.now,
            expires_at=page.now + timedelta(seconds=console.config.blocklist_ttl_s),
        )
        try:
            console.publish(Topics(console.config.topic_prefix).blocklist(), update)
        except (OSError, ConnectionError, TimeoutError) as exc:
            raise Refusal(
                f"the broker cannot be reached ({exc}): the card is not blocked", code="no_broker"
            ) from None
        return page.done(
            page.t("Card blocked at every store:") + f" {card_no}", f"/members/{owner}"
        )

    def merge(page: Page) -> Response:
        report = merge_members(
            page.session,
            member_id(page),
            page.field("absorb"),
            OldCards(page.field("old_cards", "keep"))
            if page.field("old_cards") in ("keep", "block")
            else OldCards.KEEP,
            page.field("note"),
            page.user.name,
            page.now,
            IdFactory(),
        )
        record(
            page.session,
            page.actor,
            "member.merge",
            report.kept_member_id,
            page.now,
            after=report.as_dict(),
        )
        return page.done(
            page.t("Merged:")
            + f" {report.absorbed_member_id} → {report.kept_member_id} ({report.points:+d})"
        )

    change = console.change
    return [
        Route("/members", console.view(members_page)),
        Route("/members/{member_id}", console.view(member_page)),
        Route("/members/{member_id}/adjust", change(adjust, Permission.MEMBERS), methods=["POST"]),
        Route("/members/{member_id}/merge", change(merge, Permission.APPROVE), methods=["POST"]),
        Route(
            "/adjustments/{adjustment_id}/approve",
            change(decide(True), Permission.APPROVE),
            methods=["POST"],
        ),
        Route(
            "/adjustments/{adjustment_id}/reject",
            change(decide(False), Permission.APPROVE),
            methods=["POST"],
        ),
        Route("/cards/{card_no}/block", change(block, Permission.MEMBERS), methods=["POST"]),
    ]


# -- audit -----------------------------------------------------------------------------------


def audit_routes(console: Console) -> list[BaseRoute]:
    def audit_page(page: Page) -> Response:
        q = page.query("q")[:100].strip()
        actor = page.query("actor")[:64].strip()
        before = page.query("before")
        rows, total = audit.entries(
            page.session,
            text=q,
            actor=actor,
            before_id=int(before) if before.isdigit() else None,
            limit=100,
        )
        return page.render("audit.html", rows=rows, total=total, q=q, actor=actor, limit=100)

    return [Route("/audit", console.view(audit_page))]


# -- accounts --------------------------------------------------------------------------------


def account_routes(console: Console) -> list[BaseRoute]:
    def accounts_page(page: Page) -> Response:
        return page.render(
            "accounts.html", accounts=accounts.accounts(page.session), roles=list(Role)
        )

    def create(page: Page) -> Response:
        row = accounts.create_account(
            page.session,
            page.field("name"),
            page.field("display_name"),
            parse_role(page.field("role")),
            page.field("password"),
            page.actor,
            page.now,
        )
        return page.done(page.t("Account created:") + f" {row.name}", "/accounts")

    def name_of(page: Page) -> str:
        return str(page.request.path_params["name"])

    def set_role(page: Page) -> Response:
        row = accounts.change_account(
            page.session, name_of(page), page.actor, page.now, role=parse_role(page.field("role"))
        )
        return page.done(
            page.t("Role set:") + f" {row.name} · {page.t(row.role.value)}", "/accounts"
        )

    def disable(page: Page) -> Response:
        row = accounts.change_account(
            page.session, name_of(page), page.actor, page.now, active=False
        )
        return page.done(page.t("Account disabled:") + f" {row.name}", "/accounts")

    def enable(page: Page) -> Response:
        row = accounts.change_account(
            page.session, name_of(page), page.actor, page.now, active=True
        )
        return page.done(page.t("Account enabled:") + f" {row.name}", "/accounts")

    def unlock(page: Page) -> Response:
        row = accounts.unlock(page.session, name_of(page), page.actor, page.now)
        return page.done(page.t("Account unlocked:") + f" {row.name}", "/accounts")

    def password(page: Page) -> Response:
        row = accounts.set_password(
            page.session, name_of(page), page.field("password"), page.actor, page.now
        )
        return page.done(page.t("Password set:") + f" {row.name}", "/accounts")

    change = console.change
    return [
        Route("/accounts", console.view(accounts_page, Permission.ACCOUNTS), methods=["GET"]),
        Route("/accounts", change(create, Permission.ACCOUNTS), methods=["POST"]),
        Route("/accounts/{name}/role", change(set_role, Permission.ACCOUNTS), methods=["POST"]),
        Route("/accounts/{name}/disable", change(disable, Permission.ACCOUNTS), methods=["POST"]),
        Route("/accounts/{name}/enable", change(enable, Permission.ACCOUNTS), methods=["POST"]),
        Route("/accounts/{name}/unlock", change(unlock, Permission.ACCOUNTS), methods=["POST"]),
        Route("/accounts/{name}/password", change(password, Permission.ACCOUNTS), methods=["POST"]),
    ]


def make_app(console: Console) -> Starlette:
    """The console as an ASGI app."""
    return Starlette(routes=routes(console), middleware=[Middleware(SecurityHeaders)])
