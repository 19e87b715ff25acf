"""Signed, expiring My Page links: how a resident reaches My Page where LIFF is not available (the
embedded runtime, linesim, a trial). Pure: the key and the time are arguments.

    token = base64url(tenant \\n member \\n expires_ms) . base64url(HMAC-SHA256(key, that))

The key is derived from the tenant's channel secret (`key_for`), so nothing else needs storing and a
new secret invalidates every link. A link names only opaque ids; it is good for `VALID_FOR`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Callable
from urllib.parse import quote

VALID_FOR = 30 * 60 * 1000   # ms: long enough to change settings slowly, short enough if forwarded


class BadLink(ValueError):
    """The link is malformed, forged, for another tenant, or expired (the message says which)."""


def key_for(channel_secret: str) -> bytes:
    return hmac.new(channel_secret.encode(), b"anpi my page link v1", hashlib.sha256).digest()


def make(key: bytes, tenant: str, member: str, expires_ms: int) -> str:
    payload = f"{tenant}\n{member}\n{expires_ms}".encode()
    return f"{_b64(payload)}.{_b64(hmac.new(key, payload, hashlib.sha256).digest())}"


def verify(key: bytes, token: str, tenant: str, now_ms: int) -> str:
    """The member the link was made for, if it is genuine, for `tenant`, and not expired."""
    try:
        body, signature = token.split(".")
        payload = _unb64(body)
        given = _unb64(signature)
    except ValueError:
        raise BadLink("malformed link") from None
    if not hmac.compare_digest(hmac.new(key, payload, hashlib.sha256).digest(), given):
        raise BadLink("forged link")
    try:
        linked_tenant, member, expires = payload.decode().split("\n")
        expires_ms = int(expires)
    except ValueError:
        raise BadLink("malformed link") from None
    if linked_tenant != tenant:
        raise BadLink("link of another tenant")
    if now_ms > expires_ms:
        raise BadLink("expired link")
    return member


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise ValueError("not base64url") from None


def linker(base_url: str, tenant: str, channel_secret: str) -> Callable[[str, int], str]:
    """(member, at_ms) -> the My Page URL made at `at_ms` (valid for VALID_FOR after it)."""
    key, root = key_for(channel_secret), base_url.rstrip("/")

    def link(member: str, at_ms: int) -> str:
        return f"{root}/mypage/{quote(tenant)}?t={make(key, tenant, member, at_ms + VALID_FOR)}"
    return link
