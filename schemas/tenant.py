"""A municipality running anpi: one LINE official account (channel) and its settings."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# What a tenant id may be, everywhere: part of URLs (/webhook/<id>), topic names, Redis keys and
# their hash tags, and a session id's "<tenant>.<random>" (so no '.').
ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
ID_RULE = "1 to 64 letters, digits, '_' or '-', starting with a letter or digit"


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str                                   # URL-safe, e.g. "demo-city": /webhook/{id}, topic prefix
    channel_secret: str = field(repr=False)   # verifies X-Line-Signature; never logged
    channel_access_token: str = field(repr=False)  # Bearer token for LINE's API; never logged
    timezone: str = "Asia/Tokyo"
    long_intervals: bool = True               # schedules past the 8-day line (schemas/settings.py) may be chosen
    hook_url: str = ""                        # the outgoing webhook (agents/hooks.py): "" for none
    hook_secret: str = field(default="", repr=False)  # signs its bodies; never logged
