"""The personal registration code of an imported resident: printed on their sheet, sent from their
LINE once (「登録 1234 5678」, or by the sheet's QR code, which opens the chat with it typed), and
their LINE is theirs from then on. Kept only as a hash; good for VALID_FOR; spent by the first LINE
that sends it (the same one sending it again, as LINE redelivers, is linked again)."""
from __future__ import annotations

import re
from urllib.parse import quote

from agents.link_code import LinkCode

PREFIX = "登録"
VALID_FOR = 180 * 86_400_000          # half a year to bring the sheet to a phone
RESIDENT_CODE = LinkCode(PREFIX, "anpi-resident-code")
new_code, shown, read, code_hash = RESIDENT_CODE.new, RESIDENT_CODE.shown, RESIDENT_CODE.read, RESIDENT_CODE.hash


def message_url(friend_url: str, code: str) -> str | None:
    """LINE's URL that opens the account's chat with the code typed (the sheet's QR code), from its
    add-friend URL (https://line.me/R/ti/p/@basic-id); None when that is not known."""
    found = re.search(r"/ti/p/(@[A-Za-z0-9._-]+)", friend_url or "")
    return f"https://line.me/R/oaMessage/{quote(found.group(1))}/?{quote(shown(code))}" if found else None
