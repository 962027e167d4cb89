"""The HTTP SMS gateway adapter: one JSON POST per message, its answer read as a delivery result.

The contract (docs/hq.md, "Messages to members")::

    POST {url}
    Authorization: Bearer {token}
    Content-Type: application/json; charset=utf-8

    {"to": "13812345678", "text": "..."}

    2xx  {"id": "provider-reference"}   accepted: the id is recorded as the message's reference
    429, 5xx, timeout, no connection    tried again later (backoff, hq.messages.RetryPolicy)
    any other status                    refused: recorded as failed, never tried again

The token comes from a systemd credential (``$CREDENTIALS_DIRECTORY/sms-gateway-token``) or
a file named in HQ's settings; it is read when the sender is made, never logged.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from edge.domain.errors import ConfigError
from hq.messages import SendFailed

__all__ = ["GATEWAY_TOKEN_CREDENTIAL", "HttpSmsSender", "read_token"]

GATEWAY_TOKEN_CREDENTIAL = "sms-gateway-token"
_MAX_TOKEN = 4096
_MAX_ANSWER = 64 * 1024
_REF_CHARS = 64


def read_token(file: str, credential: str) -> str:
    """A shared secret: from ``file`` when set, else the systemd credential ``credential``.

    Raises:
        ConfigError: ``token_missing`` when neither is there, ``token_unreadable`` or
            ``token_invalid`` (empty, several lines, too long).
    """
    path: Path | None = Path(file) if file else None
    if path is None:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if directory and (Path(directory) / credential).exists():
            path = Path(directory) / credential
    if path is None:
        raise ConfigError(
            f"no token: set its file in HQ's settings or pass the systemd credential {credential}",
            code="token_missing",
        )
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the token file {path}: {exc}", code="token_unreadable"
        ) from None
    token = raw.strip()
    if not token or len(token) > _MAX_TOKEN or not token.isprintable() or " " in token:
        raise ConfigError(
            f"{path}: a token is one line of printable characters, no spaces",
            code="token_invalid",
        )
    return token


def check_gateway_url(url: str) -> str:
    """``url`` when it is an http(s) address with a host.

    Raises:
        ConfigError: ``sender_invalid`` otherwise.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise ConfigError(
            f"the SMS gateway's address {url!r} is not an http(s) URL", code="sender_invalid"
        )
    return url


class HttpSmsSender:
    """Sends each message as one authenticated JSON POST to an SMS gateway.

    Example::

        token = read_token("", "sms-gateway-token")
        sender = HttpSmsSender("https://sms.example.cn/v1/send", token)
        ref = sender.send("13812345678", "...回复TD退订")
    """

    name = "http"

    def __init__(self, url: str, token: str, *, timeout_s: float = 10.0) -> None:
        self.url = check_gateway_url(url)
        self._token = token
        self.timeout_s = timeout_s

    def __repr__(self) -> str:  # the token stays out of logs and tracebacks
        return f"HttpSmsSender({self.url!r})"

    def send(self, to: str, text: str) -> str:
        body = json.dumps({"to": to, "text": text}, ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Authorization": f"Bearer {self._token}",
                "Content-Type": "application/json; charset=utf-8",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                status, raw = answer.status, answer.read(_MAX_ANSWER)
        except urllib.error.HTTPError as exc:
            retryable = exc.code == 429 or exc.code >= 500
            raise SendFailed(f"gateway answered {exc.code}", retryable=retryable) from None
        except TimeoutError:
            raise SendFailed(f"gateway did not answer in {self.timeout_s:g} s") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise SendFailed(f"gateway did not answer in {self.timeout_s:g} s") from None
            raise SendFailed(f"gateway unreachable: {reason}") from None
        except OSError as exc:  # the connection dropped while the answer was read
            raise SendFailed(f"gateway connection failed: {exc}") from None
        if not 200 <= status < 300:
            raise SendFailed(f"gateway answered {status}", retryable=False)
        return _reference(raw)


def _reference(raw: bytes) -> str:
    """The provider's id from a 2xx answer. An answer without one is recorded as failed, not
    retried: the gateway took the message, and a second try could deliver it twice."""
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    ref = answer.get("id") if isinstance(answer, dict) else None
    if isinstance(ref, int) and not isinstance(ref, bool):
        ref = str(ref)
    if not isinstance(ref, str) or not ref.strip():
        raise SendFailed(
            "gateway accepted the message but gave no id (it may have been delivered)",
            retryable=False,
        )
    return ref.strip()[:_REF_CHARS]
