"""The personal registration code of an imported resident: printed on their sheet, sent from their
LINE once (「登録 1234 5678」, or by the sheet's QR code, which opens the chat with it typed), and
their LINE is theirs from then on. Kept only as a hash; good for VALID_FOR; spent by the first LINE
that sends it (the same one sending it again, as LINE redelivers, is linked again)."""
from __future__ import annotations

import hashlib
import re
import secrets
from urllib.parse import quote

PREFIX = "登録"
DIGITS = 8
VALID_FOR = 180 * 86_400_000          # half a year to bring the sheet to a phone
_LINE = re.compile(r"\s*" + PREFIX + r"[\s:：]*([0-9０-９][0-9０-９\s\-－]{%d,24})\s*" % (DIGITS - 1))
_NOT_DIGITS = re.compile(r"[\s\-－]")


def new_code() -> str:
    return "".join(secrets.choice("0123456789") for _ in range(DIGITS))


def shown(code: str) -> str:
    return f"{PREFIX} {code[:4]} {code[4:]}"


def read(text: str) -> str | None:
    """The code in a line a resident sent, however spaced (full-width digits too), else None."""
    line = _LINE.fullmatch(text)
    if line is None:
        return None
    digits = _NOT_DIGITS.sub("", line.group(1)).translate(str.maketrans("０１２３４５６７８９", "0123456789"))
    return digits if len(digits) == DIGITS and digits.isdigit() else None


def code_hash(tenant: str, code: str) -> str:
    return hashlib.sha256(f"anpi-resident-code\n{tenant}\n{code}".encode()).hexdigest()


def message_url(friend_url: str, code: str) -> str | None:
    """LINE's URL that opens the account's chat with the code typed (the sheet's QR code), from its
    add-friend URL (https://line.me/R/ti/p/@basic-id); None when that is not known."""
    found = re.search(r"/ti/p/(@[A-Za-z0-9._-]+)", friend_url or "")
    return f"https://line.me/R/oaMessage/{quote(found.group(1))}/?{quote(shown(code))}" if found else None
