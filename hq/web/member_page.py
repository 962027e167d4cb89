"""The member's phone page (``/m``): sign in with the phone number and a one-time code, then
the rotating member code a kiosk's camera reads, points, tier, coupons and vouchers.

It is served by the console's app but shares nothing of the staff's sign-in: its own
session table and cookie (``mck_member``, path ``/m``, so it never reaches a console page),
its own CSRF tokens. The sign-in's rules are :mod:`hq.member_signin`'s, what the page shows
:mod:`hq.member_account`'s, consent changes :func:`hq.contact.set_message_consent`'s.
"""

from __future__ import annotations

import base64
import functools
import hmac
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import qrcode
import qrcode.image.svg
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from edge.domain.errors import InvalidInput, KioskError
from edge.domain.points import last_day
from edge.security.codes import mint_member_code
from edge.security.personal import normalize_phone
from hq import member_account, member_signin
from hq.audit import Actor
from hq.contact import set_message_consent
from hq.member_signin import CodeSent, NotAMember, Refused
from hq.models import CentralMember
from hq.web.core import Console, local_path, new_login_token
from hq.web.i18n import N_, Translate, translator

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge.security.personal import PhoneVault
    from hq.messages import Sender

MEMBER_COOKIE = "mck_member"
MEMBER_LOGIN_COOKIE = "mck_m_login"
CODE_TTL_S = 60  # a member code's life at the kiosks (security.member_code_ttl_s)
REFRESH_S = 45  # the page fetches a new code this long after the last

# What each refusal of the sign-in says, translated; {wait}, {until} and {left} are its figures.
REFUSALS = {
    "address_limit": N_(
        "Too many sign-in codes were asked for from this network: try again in {wait}."
    ),
    "too_soon": N_("A code was sent to this number a moment ago: ask again in {wait}."),
    "number_limit": N_("At most 5 codes an hour for one number: try again in {wait}."),
    "locked": N_("Too many wrong codes: this number can sign in again at {until}."),
    "wrong_code": N_("Wrong code: {left} more tries before this number is locked for 30 minutes."),
    "no_code": N_("This code has expired or was used: ask for a new one."),
    "bad_phone": N_("Type an 11-digit mobile number (such as 138 0013 8000)."),
    "bad_code": N_("The code is the 6 digits in the message."),
    "not_your_phone": N_("That is not the number this membership is registered with."),
    "no_phone": N_("Please give your consent at the member center."),
}

# A history line in plain words, by the entry's kind.
KINDS = {
    "purchase": N_("Shopping"),
    "checkin": N_("Daily check-in"),
    "birthday": N_("Birthday gift"),
    "referral": N_("Friend referred"),
    "redemption": N_("Redeemed at the member center"),
    "expiry": N_("Points expired"),
    "adjustment": N_("Corrected by the member center"),
    "refund": N_("Purchase returned"),
    "voucher_return": N_("Uncollected gift: points back"),
    "merge_in": N_("Accounts merged"),
    "merge_out": N_("Accounts merged"),
    "opening": N_("Points brought over"),
}


@dataclass(frozen=True)
class MemberPageSettings:
    """What the member page needs besides HQ's database; a part missing turns off what needs
    it, and the page says so.

    ``vault``: HQ's data key with the chain's lookup key (finds a member by phone, seals the
    number in the queued message); ``sender``: delivers the sign-in codes; ``code_key``:
    HQ's member-code key; ``coupon_key``: signs the wallet's coupons (HQ's command key).
    """

    vault: PhoneVault | None = None
    sender: Sender | None = None
    code_key: Ed25519PrivateKey | None = None
    coupon_key: Ed25519PrivateKey | None = None

    @property
    def signs_in(self) -> bool:
        return self.vault is not None and self.sender is not None


def qr_data_uri(text: str) -> str:
    """``text`` as a QR code: an SVG (black on white, a 4-module quiet zone) in a data URI."""
    qr = qrcode.QRCode(
        error_correction=qrcode.constants.ERROR_CORRECT_M,
        border=4,
        image_factory=qrcode.image.svg.SvgPathFillImage,
    )
    qr.add_data(text)
    qr.make(fit=True)
    out = io.BytesIO()
    qr.make_image().save(out)
    return "data:image/svg+xml;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _local(value: datetime | None, fmt: str = "%Y-%m-%d") -> str:
    return "—" if value is None else value.astimezone(member_account.TZ).strftime(fmt)


def _last_day(value: datetime) -> str:
    """The last day something ending at ``value`` can be used (ending at midnight: the day
    before)."""
    return last_day(value, member_account.TZ).isoformat()


def _address(request: Request) -> str:
    return request.client.host if request.client else ""


def _refusal(t: Translate, refused: Refused) -> str:
    text = REFUSALS.get(refused.code)
    if text is None:
        return refused.message
    return t(text).format(**{k: str(v) for k, v in refused.details.items()})


def member_routes(console: Console) -> list[BaseRoute]:
    """The member page's routes, under ``/m`` (its settings read from ``console`` at each
    request)."""

    def settings() -> MemberPageSettings:
        return console.member_page

    # HQ's data key, read once: a member's snapshot (their lots) comes through it.
    data_vault = functools.cache(console.config.personal_vault)
    # Members read days and times in the stores' timezone, not in UTC as the staff do.
    console.env.filters["local"] = _local
    console.env.filters["last_day"] = _last_day

    def render(request: Request, template: str, status: int = 200, **values: Any) -> Response:
        lang = console.language(request)
        values.setdefault("error", "")
        values.setdefault("notice", "")
        return console.render(
            None,
            template,
            status,
            request=request,
            _=translator(lang),
            lang=lang,
            available=settings().signs_in,
            **values,
        )

    def sign_in_page(request: Request, status: int = 200, **values: Any) -> Response:
        token = request.cookies.get(MEMBER_LOGIN_COOKIE) or new_login_token()
        values.setdefault("step", "phone")
        values.setdefault("phone", "")
        response = render(request, "m_signin.html", status, login_csrf=token, **values)
        response.set_cookie(
            MEMBER_LOGIN_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=console.secure_cookies,
            path="/m",
        )
        return response

    def login_token_ok(request: Request, form: FormData) -> bool:
        sent, expected = str(form.get("csrf", "")), request.cookies.get(MEMBER_LOGIN_COOKIE, "")
        return bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())

    def signed_in(request: Request) -> member_signin.CurrentMember | None:
        with console.tx() as session:
            return member_signin.current(
                session, request.cookies.get(MEMBER_COOKIE, ""), console.clock()
            )

    async def home(request: Request) -> Response:
        current = await run_in_threadpool(signed_in, request)
        if current is None:
            return sign_in_page(request)

        def show() -> Response:
            with console.tx() as session:
                now = console.clock()
                view = member_account.account(
                    session,
                    data_vault(),
                    current.member_id,
                    now,
                    settings().coupon_key,
                )
                code = _code(view.card_no, now)
            return render(
                request,
                "m_home.html",
                member_csrf=current.csrf,
                view=view,
                code=code,
                kinds=KINDS,
                refresh_s=REFRESH_S,
                ttl_s=CODE_TTL_S,
            )

        return await run_in_threadpool(show)

    def _code(card_no: str | None, now: datetime) -> dict[str, str] | None:
        key = settings().code_key
        if card_no is None or key is None:
            return None
        return {
            "qr": qr_data_uri(mint_member_code(key, card_no, now)),
            "last4": card_no[-4:],
        }

    async def code_json(request: Request) -> Response:
        """A fresh member code for the page's script."""

        def fresh() -> Response:
            current = signed_in(request)
            if current is None:
                return JSONResponse({"error": "signed_out"}, status_code=401)
            with console.tx() as session:
                now = console.clock()
                card_no, _ = member_account.active_card(session, current.member_id)
            code = _code(card_no, now)
            if code is None:
                return JSONResponse({"error": "no_card"}, status_code=409)
            return JSONResponse({**code, "valid_s": CODE_TTL_S, "refresh_s": REFRESH_S})

        return await run_in_threadpool(fresh)

    async def ask_code(request: Request) -> Response:
        form = await request.form(max_fields=10, max_files=0)
        t = translator(console.language(request))
        phone = str(form.get("phone", ""))[:32]
        if not login_token_ok(request, form):
            return sign_in_page(
                request, 403, error=t("This form has expired: please try again."), phone=phone
            )
        vault, sender = settings().vault, settings().sender
        if vault is None or sender is None:
            return sign_in_page(request, 503)

        def send() -> CodeSent | NotAMember | Refused:
            with console.tx() as session:
                return member_signin.request_code(
                    session, vault, sender, phone, _address(request), console.clock()
                )

        try:
            outcome = await run_in_threadpool(send)
        except InvalidInput as exc:
            return sign_in_page(request, 400, error=_refusal(t, Refused(exc.code, exc.message)))
        if isinstance(outcome, Refused):
            return sign_in_page(request, 429, error=_refusal(t, outcome), phone=phone)
        if isinstance(outcome, NotAMember):
            return sign_in_page(request, 200, step="not_member", phone=phone)
        notice = t("A 6-digit code was sent to {phone}. It is valid for 5 minutes.").format(
            phone=outcome.phone_masked
        )
        if not outcome.delivered:
            notice = t("The code could not be sent just now: ask again in a minute.")
        return sign_in_page(request, 200, step="code", phone=phone, notice=notice)

    async def check_code(request: Request) -> Response:
        form = await request.form(max_fields=10, max_files=0)
        t = translator(console.language(request))
        phone, code = str(form.get("phone", ""))[:32], str(form.get("code", ""))[:16]
        if not login_token_ok(request, form):
            return sign_in_page(
                request, 403, error=t("This form has expired: please try again."), phone=phone
            )
        vault = settings().vault
        if vault is None:
            return sign_in_page(request, 503)
        lookup = vault.lookup_hash

        def check() -> member_signin.MemberSignedIn | Refused:
            with console.tx() as session:
                old = request.cookies.get(MEMBER_COOKIE)
                if old:
                    member_signin.sign_out(session, old)
                return member_signin.sign_in(
                    session, lookup, phone, code, _address(request), console.clock()
                )

        try:
            outcome = await run_in_threadpool(check)
        except InvalidInput as exc:
            return sign_in_page(
                request,
                400,
                step="code",
                phone=phone,
                error=_refusal(t, Refused(exc.code, exc.message)),
            )
        if isinstance(outcome, Refused):
            status = 429 if outcome.code == "locked" else 401
            step = "phone" if outcome.code in ("locked", "no_code") else "code"
            return sign_in_page(request, status, step=step, phone=phone, error=_refusal(t, outcome))
        response = RedirectResponse("/m", status_code=303)
        response.set_cookie(
            MEMBER_COOKIE,
            outcome.token,
            max_age=int(member_signin.SESSION_TTL.total_seconds()),
            httponly=True,
            # Lax: a member opening the page from a link in a message app arrives signed in;
            # every change is a POST carrying the session's CSRF token.
            samesite="lax",
            secure=console.secure_cookies,
            path="/m",
        )
        response.delete_cookie(MEMBER_LOGIN_COOKIE, path="/m")
        return response

    def member_change(
        do: Callable[[Any, CentralMember, datetime, Any], str],
    ) -> Callable[..., Any]:
        """A POST of a signed-in member: CSRF-checked against their session."""

        async def endpoint(request: Request) -> Response:
            form = await request.form(max_fields=10, max_files=0)
            t = translator(console.language(request))

            def run() -> Response:
                with console.tx() as session:
                    now = console.clock()
                    current = member_signin.current(
                        session, request.cookies.get(MEMBER_COOKIE, ""), now
                    )
                    if current is None:
                        return sign_in_page(request, 401, error=t("Sign in first."))
                    sent = str(form.get("csrf", ""))
                    if not hmac.compare_digest(sent.encode(), current.csrf.encode()):
                        return render(
                            request,
                            "m_refused.html",
                            403,
                            reason=t("This form has expired: please try again."),
                        )
                    member = session.get(CentralMember, current.member_id)
                    if member is None:
                        return sign_in_page(request, 401, error=t("Sign in first."))
                    to = do(session, member, now, form)
                return RedirectResponse(local_path(to, "/m"), status_code=303)

            try:
                return await run_in_threadpool(run)
            except KioskError as exc:
                reason = _refusal(t, Refused(exc.code, exc.message))
                return render(request, "m_refused.html", 400, reason=reason)

        return endpoint

    def withdraw(session: Any, member: CentralMember, now: datetime, form: Any) -> str:
        set_message_consent(
            session, member, None, now=now, actor=Actor(member.phone_masked or member.id, "member")
        )
        return "/m#messages"

    def give(session: Any, member: CentralMember, now: datetime, form: Any) -> str:
        """Consent given again: the member types their number (HQ forgot it when they
        withdrew), which must be the one the membership is registered with."""
        vault = settings().vault
        if vault is None or member.phone_hash is None:  # (signed in by number: neither)
            raise InvalidInput("give your consent at the member center", code="no_phone")
        phone = normalize_phone(str(form.get("phone", "")))
        if not hmac.compare_digest(vault.lookup_hash(phone), member.phone_hash):
            raise InvalidInput(
                "that is not the number this membership is registered with", code="not_your_phone"
            )
        member.phone_enc = vault.encrypt(phone)
        set_message_consent(
            session,
            member,
            console.config.messages.terms_version,
            now=now,
            actor=Actor(member.phone_masked or member.id, "member"),
        )
        return "/m#messages"

    async def sign_out(request: Request) -> Response:
        form = await request.form(max_fields=10, max_files=0)

        def run() -> None:
            with console.tx() as session:
                token = request.cookies.get(MEMBER_COOKIE, "")
                current = member_signin.current(session, token, console.clock())
                if current is not None and hmac.compare_digest(
                    str(form.get("csrf", "")).encode(), current.csrf.encode()
                ):
                    member_signin.sign_out(session, token)

        await run_in_threadpool(run)
        response = RedirectResponse("/m", status_code=303)
        response.delete_cookie(MEMBER_COOKIE, path="/m")
        return response

    return [
        Route("/m", home, methods=["GET"]),
        Route("/m/code", code_json, methods=["GET"]),
        Route("/m/code", ask_code, methods=["POST"]),
        Route("/m/sign-in", check_code, methods=["POST"]),
        Route("/m/consent/withdraw", member_change(withdraw), methods=["POST"]),
        Route("/m/consent/give", member_change(give), methods=["POST"]),
        Route("/m/sign-out", sign_out, methods=["POST"]),
    ]
