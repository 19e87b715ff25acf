"""Invitation codes: how a resident of 安否通知 makes someone their contact, without typing an id.

The resident taps 「家族を招待する」; anpi answers with a button that shares an invitation through
LINE. The contact adds the account as a friend and sends back the line 「招待 <code>」. The code names
the inviting member (so the message can be routed to the member's partition without a lookup) and
carries a nonce the shell derives from LINE's random webhookEventId (so nobody can guess it, and a
redelivered tap makes the same code). The member's state holds the one open code: it works once,
for a few days (agents/member.py).
"""
from __future__ import annotations

import base64
import hashlib
import re

PREFIX = "招待"
NONCE_CHARS = 12          # base32: 60 bits
_CODE = re.compile(r"([A-Za-z0-9_-]{2,96})\.([a-z2-7]{%d})" % NONCE_CHARS)
_LINE = re.compile(r"\s*" + PREFIX + r"[\s:：]*(\S+)\s*")


def make(member: str, seed: str) -> str:
    """`member`'s code, unguessable as long as `seed` is (the tap's webhookEventId)."""
    nonce = base64.b32encode(hashlib.sha256(f"{member}\n{seed}".encode()).digest()).decode().lower()
    return f"{_b64(member)}.{nonce[:NONCE_CHARS]}"


def message(code: str) -> str:
    """The line the contact sends back."""
    return f"{PREFIX} {code}"


def read(text: str) -> tuple[str, str] | None:
    """(inviting member, code) when a message is an invitation line, else None."""
    line = _LINE.fullmatch(text)
    if line is None:
        return None
    code = _CODE.fullmatch(line.group(1))
    if code is None:
        return None
    try:
        member = base64.urlsafe_b64decode(code.group(1) + "=" * (-len(code.group(1)) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    if not member or not member.isprintable():
        return None
    return member, line.group(1)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
