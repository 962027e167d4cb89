"""Who gets in and what they may change: roles, CSRF, session fixation, lockout, injection."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select
from starlette.routing import Mount, Route

from hq.accounts import MAX_FAILURES, Role
from hq.models import Alert, AuditRecord, WebAccount, WebSession
from hq.web.app import make_app
from hq.web.core import SESSION_COOKIE
from tests.web.conftest import PASSWORD, Web, csrf_of, seed_fleet, sign_in

PARAMS = {
    "rollout_id": "1",
    "sku": "TEA-1",
    "alert_id": "1",
    "name": "ops",
    "device_id": "K0011",
    "member_id": "M-1",
    "card_no": "1",
}


def changing_requests(web: Web) -> list[str]:
    """Every POST the console answers, with its path parameters filled in (the member page's,
    under /m, have their own sessions and tests: tests/web/test_member_page.py)."""
    paths: list[str] = []

    def walk(routes: list, prefix: str = "") -> None:
        for route in routes:
            if isinstance(route, Mount):
                walk(list(route.routes), prefix + route.path)
            elif isinstance(route, Route) and route.methods and "POST" in route.methods:
                path = prefix + route.path
                if path.startswith("/m/"):
                    continue
                for name in route.param_convertors:
                    path = re.sub(r"\{" + name + r"(:[a-z]+)?\}", PARAMS.get(name, "x"), path)
                paths.append(path)

    walk(list(make_app(web.console).routes))
    return paths


GATEWAY_DOORS = {"/sms/inbound"}  # hq.web.sms: authenticated by a token, not a console account


def counts(web: Web) -> tuple[int, ...]:
    acknowledged = select(func.count()).select_from(Alert).where(Alert.acknowledged_at.is_not(None))
    with web.session() as s:
        tables = [
            s.scalar(select(func.count()).select_from(t)) or 0
            for t in (AuditRecord, WebAccount, Alert)
        ]
        return (*tables, s.scalar(acknowledged) or 0)


def test_a_viewer_can_change_nothing(web: Web) -> None:
    web.account("ops", Role.ADMIN)
    web.account("vera", Role.VIEWER)
    seed_fleet(web, stores=1)
    viewer = web.client("vera")
    token = csrf_of(viewer)
    paths = changing_requests(web)
    assert len(paths) >= 8 and "/alerts/1/acknowledge" in paths and "/accounts" in paths
    before = counts(web)
    for path in paths:
        if path == "/logout":
            continue  # signing oneself out is every account's own business
        if path in GATEWAY_DOORS:
            # the SMS gateway's door takes no console session, only its own token
            response = viewer.post(path, json={"from": "13812345678", "text": "TD"})
            assert response.status_code in (401, 503), path
            continue
        form = {
            "csrf": token,
            "note": "done",
            "role": "admin",
            "name": "evil",
            "password": "x" * 12,
        }
        response = viewer.post(path, data=form)
        assert response.status_code == 403, path
    assert counts(web) == before
    # ... and can look at every page
    for page in ("/fleet", "/alerts", "/audit", "/devices/K0011"):
        assert viewer.get(page).status_code == 200, page
    assert viewer.get("/accounts").status_code == 403


def test_every_change_needs_the_sessions_csrf_token(web: Web) -> None:
    web.account("ops", Role.ADMIN)
    seed_fleet(web, stores=1)
    admin = web.client("ops")
    before = counts(web)
    for path in set(changing_requests(web)) - GATEWAY_DOORS:  # no forms there: a token
        for form in ({}, {"csrf": "forged"}, {"csrf": ""}):
            response = admin.post(path, data={"note": "x", **form})
            assert response.status_code == 403, (path, form)
    assert counts(web) == before
    # a token from another session is no good either
    web.account("otto", Role.OPERATOR)
    other = csrf_of(web.client("otto"))
    assert admin.post("/alerts/1/acknowledge", data={"csrf": other, "note": "x"}).status_code == 403
    ok = admin.post(
        "/alerts/1/acknowledge", data={"csrf": csrf_of(admin), "note": "paper refilled"}
    )
    assert ok.status_code == 303
    assert counts(web)[-1] == before[-1] + 1


def test_the_login_form_needs_its_own_token(web: Web) -> None:
    web.account("ops", Role.ADMIN)
    client = web.client()
    response = client.post("/login", data={"name": "ops", "password": PASSWORD, "csrf": "x"})
    assert response.status_code == 403
    assert SESSION_COOKIE not in client.cookies


def test_a_session_token_planted_before_sign_in_is_worthless_after_it(web: Web) -> None:
    web.account("ops", Role.ADMIN)
    web.account("mallory", Role.VIEWER)
    attacker = web.client("mallory")
    planted = attacker.cookies[SESSION_COOKIE]
    victim = web.client()
    victim.cookies.set(SESSION_COOKIE, planted, domain="testserver.local")
    assert sign_in(victim, "ops", PASSWORD).status_code == 303
    fresh = victim.cookies[SESSION_COOKIE]
    assert fresh != planted
    # the planted token was ended by the sign-in, and never became the admin's session
    attacker.cookies.set(SESSION_COOKIE, planted, domain="testserver.local")
    assert attacker.get("/fleet").status_code == 303
    with web.session() as s:
        assert s.scalar(select(func.count()).select_from(WebSession)) == 1


def test_cookies_are_http_only_and_same_site(web: Web) -> None:
    web.account("ops", Role.ADMIN)
    client = web.client()
    token = client.get("/login")
    assert "httponly" in token.headers["set-cookie"].lower()
    response = sign_in(client, "ops", PASSWORD)
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    headers = client.get("/fleet").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"


def test_wrong_passwords_lock_the_account_for_a_while(web: Web) -> None:
    web.account("ops", Role.ADMIN)
    web.account("ann", Role.ADMIN)
    client = web.client()
    for _ in range(MAX_FAILURES):
        response = sign_in(client, "ops", "not-the-password")
        assert response.status_code == 401
        assert "账号或密码错误" in response.text
    locked = sign_in(client, "ops", PASSWORD)
    assert locked.status_code == 401
    assert "锁定" in locked.text
    # a wrong name says the same as a wrong password
    assert "账号或密码错误" in sign_in(client, "nobody", PASSWORD).text
    web.clock.advance(minutes=16)
    assert sign_in(client, "ops", PASSWORD).status_code == 303
    # an administrator can lift a lockout sooner
    for _ in range(MAX_FAILURES):
        sign_in(web.client(), "ops", "wrong-wrong-wrong")
    admin = web.client("ann")
    response = admin.post("/accounts/ops/unlock", data={"csrf": csrf_of(admin)})
    assert response.status_code == 303
    assert sign_in(web.client(), "ops", PASSWORD).status_code == 303
    with web.session() as s:
        actions = s.scalars(select(AuditRecord.action).order_by(AuditRecord.id)).all()
    assert actions.count("account.locked") == 2 and "account.unlock" in actions


SEARCHES = {
    "/fleet": ("q", "store"),
    "/alerts": ("kind", "store"),
    "/audit": ("q", "actor"),
    "/members": ("q",),
}
ATTACKS = (
    "' OR '1'='1",
    "%' OR 1=1 --",
    '<script>alert("x")</script>',
    '"><img src=x onerror=alert(1)>',
)


@pytest.mark.parametrize("attack", ATTACKS)
def test_search_boxes_take_injection_as_text(web: Web, attack: str) -> None:
    web.account("ops", Role.ADMIN)
    seed_fleet(web, stores=2)
    client = web.client("ops")
    for page, fields in SEARCHES.items():
        for name in fields:
            response = client.get(page, params={name: attack})
            assert response.status_code == 200, (page, name)
            assert "<script>alert" not in response.text and "<img src=x" not in response.text
            if page == "/fleet":
                assert "K0011" not in response.text  # matched nothing, listed nothing
    with web.session() as s:
        assert s.scalar(select(func.count()).select_from(WebAccount)) == 1


def test_text_from_devices_is_shown_escaped(web: Web) -> None:
    from hq import fleet
    from tests.web.conftest import telemetry

    web.account("ops", Role.ADMIN)
    with web.console.tx() as s:
        fleet.apply_telemetry(
            s,
            telemetry(
                "K0099",
                "S009",
                web.clock(),
                printer="failed",
                printer_code="jam",
                reason='<script>alert("x")</script>',
            ),
            web.clock(),
        )
    client = web.client("ops")
    for page in ("/fleet", "/devices/K0099", "/alerts"):
        html = client.get(page).text
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert" in html, page
