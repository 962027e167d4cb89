"""The console's record of messages (/messages): every role may look, numbers masked, a
sign-in code's text never shown, filters by status and member, text from outside escaped,
Chinese first with the English switch; and in Chromium."""

from __future__ import annotations

from sqlalchemy.orm import Session

from edge.security.personal import PhoneVault
from hq.accounts import Role
from hq.messages import FileSender, SendFailed, attempt, enqueue
from hq.models import HqMessage
from tests.web.conftest import PASSWORD, Served, Web

VAULT = PhoneVault(bytes(range(32)), bytes(range(32, 64)))


class Refusing:
    name = "http"

    def send(self, to: str, text: str) -> str:
        raise SendFailed("gateway answered 422", retryable=False)


def _seed(web: Web) -> None:
    now = web.clock()
    sender = FileSender(web.tmp / "sent.jsonl")
    with web.console.tx() as s:

        def queue(kind: str, member: str, phone: str, text: str) -> HqMessage:
            message = enqueue(
                s, VAULT, kind=kind, member_id=member, phone=phone, text=text,
                sender="file", now=now,
            )  # fmt: skip
            assert message is not None
            return message

        attempt(s, VAULT, queue("birthday", "M1", "13812345678", "生日月快乐"), sender, now)
        attempt(
            s, VAULT, queue("coupon", "M2", "13900001111", "<script>x</script>"), Refusing(), now
        )
        queue("points_expiry", "M1", "13812345678", "您有120积分将于12月31日到期")
        attempt(s, VAULT, queue("otp", "M1", "13812345678", "验证码 482913"), sender, now)


def _rows(session: Session) -> int:
    return len(session.query(HqMessage).all())


def test_a_viewer_sees_every_message_with_masked_numbers_and_no_sign_in_code(web: Web):
    web.account("vera", Role.VIEWER)
    _seed(web)
    viewer = web.client("vera")
    page = viewer.get("/messages")
    assert page.status_code == 200
    html = page.text
    assert "138****5678" in html and "139****1111" in html
    assert "13812345678" not in html and "13900001111" not in html
    assert "482913" not in html and "登录验证码，不显示" in html
    assert "生日月快乐" in html and "已发至短信网关" in html
    assert "发送失败" in html and "gateway answered 422" in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "<script>x</script>" not in html
    assert '<a href="/messages"' in html  # in the menu

    failed = viewer.get("/messages", params={"status": "failed"}).text
    assert "139****1111" in failed and "138****5678" not in failed
    waiting = viewer.get("/messages", params={"status": "queued", "member": "M1"}).text
    assert "12月31日到期" in waiting and "生日月快乐" not in waiting
    nobody = viewer.get("/messages", params={"member": "M9"}).text
    assert "没有符合条件的短信" in nobody
    bogus = viewer.get("/messages", params={"status": "<b>", "before": "nonsense"})
    assert bogus.status_code == 200 and "<b>" not in bogus.text

    viewer.get("/lang/en", params={"back": "/messages"})
    english = viewer.get("/messages").text
    assert (
        "Messages" in english and "sending failed" in english and "sent to the gateway" in english
    )
    with web.session() as s:
        assert _rows(s) == 4  # looking changed nothing


def test_the_page_needs_a_signed_in_account(web: Web):
    response = web.client().get("/messages")
    assert response.status_code in (302, 303) and "/login" in response.headers["location"]


def test_messages_page_in_chromium(served: Served, browser) -> None:
    web = served.web
    web.account("ops", Role.VIEWER)
    _seed(web)
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = context.new_page()
    page.goto(served.url + "/messages")
    page.fill("input[name=name]", "ops")
    page.fill("input[name=password]", PASSWORD)
    page.click("button.primary")
    page.wait_for_url(served.url + "/messages")
    assert page.locator("table.messages tbody tr").count() == 4
    page.click("text=发送失败")
    page.wait_for_url(served.url + "/messages?status=failed&member=")
    assert page.locator("table.messages tbody tr").count() == 1
    assert "139****1111" in page.locator("table.messages").inner_text()
    context.close()


def test_older_messages_are_a_page_away(web: Web, monkeypatch):
    import re

    from hq.web import messages_page

    monkeypatch.setattr(messages_page, "PAGE_ROWS", 3)
    web.account("vera", Role.VIEWER)
    _seed(web)
    viewer = web.client("vera")
    first = viewer.get("/messages").text
    assert first.count('<tr id="message-') == 3
    link = re.search(r'href="(/messages\?[^"]*before=[^"]+)"', first)
    assert link is not None
    second = viewer.get(link.group(1).replace("&amp;", "&")).text
    assert second.count('<tr id="message-') == 1
    ids = set(re.findall(r'<tr id="message-(\w+)"', first + second))
    assert len(ids) == 4
