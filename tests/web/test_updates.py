"""The updates page: a signed bundle uploaded in the browser, a rollout to a ring started,
its devices' progress, halt and resume; a bundle HQ did not sign is refused, and the bundle
is served to the devices by its SHA-256."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from hq.accounts import Role
from hq.models import AuditRecord, Rollout, UpdateBundle
from tests.hq.test_rollouts import UPDATE_KEY, kiosks, make_bundle
from tests.web.conftest import Served, Web, csrf_of, refused
from tests.web.test_browser import shot, sign_in


def with_update_key(web: Web) -> None:
    key = web.tmp / "hq-update.pub"
    key.write_bytes(
        UPDATE_KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    web.console.config = web.console.config.model_copy(
        update={"update_key": str(key), "bundle_dir": str(web.tmp / "bundles")}
    )


def test_upload_a_bundle_and_roll_it_out_to_a_ring(served: Served, browser, tmp_path: Path) -> None:
    web = served.web
    with_update_key(web)
    web.account("sam", Role.SUPERVISOR)
    kiosks(web.console.engine, 6)
    bundle = make_bundle(tmp_path, "1.1.0")
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = context.new_page()
    sign_in(page, served.url, "sam")
    page.goto(served.url + "/updates")
    page.locator("#upload-form input[name=bundle]").set_input_files(str(bundle))
    page.locator("#upload-form button").click()
    page.wait_for_selector(".flash.ok")
    assert "1.1.0" in page.locator("#bundles").inner_text()
    page.fill("#rollout-form input[name=ring]", "store:S001")
    page.locator("#rollout-form button").click()
    page.wait_for_url("**/updates/*")
    assert page.locator("#progress tbody tr").count() == 3  # the store's three kiosks
    shot(page, "rollout")
    page.fill("input[name=reason]", "门店营业高峰")
    page.click("button.danger")
    page.wait_for_selector(".flash.ok")
    with web.session() as s:
        rollout = s.scalar(select(Rollout))
        assert rollout is not None and rollout.state == "halted"
    page.click("text=继续")
    page.wait_for_selector(".flash.ok")
    page.goto(served.url + "/updates")
    shot(page, "updates")
    context.close()
    sha = hashlib.sha256(bundle.read_bytes()).hexdigest()
    import urllib.request

    with urllib.request.urlopen(f"{served.url}/bundles/{sha}.bundle") as got:
        assert got.read() == bundle.read_bytes()
    with web.session() as s:
        actions = s.scalars(select(AuditRecord.action).where(AuditRecord.actor == "sam")).all()
    assert {"bundle.upload", "rollout.start", "rollout.halt", "rollout.resume"} <= set(actions)


def test_a_bundle_hq_did_not_sign_is_refused_and_kept_nowhere(web: Web, tmp_path: Path) -> None:
    with_update_key(web)
    web.account("sam", Role.SUPERVISOR)
    web.account("otto", Role.OPERATOR)
    forged = make_bundle(tmp_path, "6.6.6", signer=Ed25519PrivateKey.generate())
    client = web.client("sam")
    response = client.post(
        "/updates/bundles",
        data={"csrf": csrf_of(client)},
        files={"bundle": ("forged.tar", forged.read_bytes(), "application/octet-stream")},
    )
    assert refused(response)
    operator = web.client("otto")
    genuine = make_bundle(tmp_path, "1.2.0")
    denied = operator.post(
        "/updates/bundles",
        data={"csrf": csrf_of(operator)},
        files={"bundle": ("b.tar", genuine.read_bytes(), "application/octet-stream")},
    )
    assert denied.status_code == 403  # rolling out updates is a supervisor's
    with web.session() as s:
        assert s.scalars(select(UpdateBundle)).all() == []
    left = sorted(p.name for p in (web.tmp / "bundles").rglob("*") if p.is_file())
    assert left == [], left
    assert client.get("/bundles/" + "0" * 64 + ".bundle").status_code == 404
    assert client.get("/bundles/../../etc/passwd.bundle").status_code == 404
