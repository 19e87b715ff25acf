"""A code a person types into LINE to link their LINE to something staff made for them (a staff
account: agents/on_call.py; an imported resident: streams/residents/codes.py). Pure.

Eight random digits, sent as 「<prefix> 1234 5678」 (read however it is spaced, full-width digits
too); kept by its owner only as a hash salted with the tenant and what the code is for, so that a
store's reader cannot link their own LINE.
"""
from __future__ import annotations

import hashlib
import re
import secrets

DIGITS = 8
_NOT_DIGITS = re.compile(r"[\s\-－]")


class LinkCode:
    def __init__(self, prefix: str, salt: str):
        self.prefix, self.salt = prefix, salt
        self._line = re.compile(r"\s*" + prefix + r"[\s:：]*([0-9０-９][0-9０-９\s\-－]{%d,24})\s*" % (DIGITS - 1))

    def new(self) -> str:
        return "".join(secrets.choice("0123456789") for _ in range(DIGITS))

    def shown(self, code: str) -> str:
        """「<prefix> 1234 5678」: the line to send."""
        return f"{self.prefix} {code[:4]} {code[4:]}"

    def read(self, text: str) -> str | None:
        """The code in a line someone sent, else None."""
        line = self._line.fullmatch(text)
        if line is None:
            return None
        digits = _NOT_DIGITS.sub("", line.group(1)).translate(str.maketrans("０１２３４５６７８９", "0123456789"))
        return digits if len(digits) == DIGITS and digits.isdigit() else None

    def hash(self, tenant: str, code: str) -> str:
        return hashlib.sha256(f"{self.salt}\n{tenant}\n{code}".encode()).hexdigest()
