"""A municipality running anpi: one LINE official account (channel) and its settings."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str                                   # URL-safe, e.g. "demo-city": /webhook/{id}, topic prefix
    channel_secret: str = field(repr=False)   # verifies X-Line-Signature; never logged
    channel_access_token: str = field(repr=False)  # Bearer token for LINE's API; never logged
    timezone: str = "Asia/Tokyo"
