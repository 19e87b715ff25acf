"""A tenant's settings (`anpi tenant add`, and the admin screen's 設定): the check card's question and
quote list, the time zone, and the LINE channel's credentials; stored by a registry backend
(streams/tenants/registry.py). A part left None means "not set here": the built-in wording, and for
the zone and the credentials whatever the tenant was started with (the environment: ANPI_TIMEZONE,
ANPI_CHANNEL_SECRET, ANPI_CHANNEL_ACCESS_TOKEN). What is stored wins over the environment.

SECURITY: once credentials are saved, the store (the SQLite file with its -wal / -shm companions,
or Redis and its dumps) holds the channel secret and access token in the clear. Protect it like a
secrets file: owner-only permissions (chmod 600), no world-readable backups. The credentials are
write-only on the admin screen: pages show at most that they are set, when, and their last four
characters; they are never logged and never written to the audit log.

Validation raises `Invalid` with a message in Japanese that staff can act on; `merged` checks every
value it is given before anything is written, so a refused form changes nothing.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from agents.messages import Texts
from schemas.tenant import Tenant

CHECK_MAX = 40          # characters of the question on the check card
QUOTES_MAX = 100        # quotes in the list
QUOTE_MAX = 60          # characters per quote
SECRET_PATTERN = re.compile(r"^[\x21-\x7e]{8,256}$")    # LINE's: 32 hex digits; printable ASCII, no spaces
TOKEN_PATTERN = re.compile(r"^[\x21-\x7e]{16,2048}$")   # LINE's long-lived tokens: ~170 base64 characters

# The zones offered on the settings page (any other valid IANA zone is accepted too, e.g. one set
# from the environment); Japan first: that is where nearly every tenant is.
ZONES = (("Asia/Tokyo", "日本（東京）"), ("Asia/Seoul", "韓国（ソウル）"), ("Asia/Shanghai", "中国（上海）"),
         ("Asia/Taipei", "台湾（台北）"), ("Asia/Manila", "フィリピン（マニラ）"), ("Asia/Bangkok", "タイ（バンコク）"),
         ("Asia/Singapore", "シンガポール"), ("Australia/Sydney", "オーストラリア（シドニー）"),
         ("Pacific/Honolulu", "アメリカ（ハワイ）"), ("America/Los_Angeles", "アメリカ（ロサンゼルス）"),
         ("America/New_York", "アメリカ（ニューヨーク）"), ("America/Sao_Paulo", "ブラジル（サンパウロ）"),
         ("Europe/London", "イギリス（ロンドン）"), ("Europe/Berlin", "ドイツ（ベルリン）"), ("UTC", "協定世界時（UTC）"))


class Invalid(ValueError):
    """A value staff typed that cannot be stored; the message says why, in Japanese."""


@dataclass(frozen=True, slots=True)
class TenantSettings:
    check_text: str | None = None
    quotes: tuple[str, ...] | None = None
    timezone: str | None = None
    channel_secret: str | None = field(default=None, repr=False)
    channel_access_token: str | None = field(default=None, repr=False)
    secret_updated_at: int | None = None
    token_updated_at: int | None = None
    updated_at: int = 0
    staff_call_limit_hours: int | None = None   # the alert's: a staff call open longer than this (None: default)
    forbid_long_intervals: bool = False         # residents may not choose a schedule past the 8-day line
    hook_url: str | None = None                 # the outgoing webhook (agents/hooks.py)
    hook_secret: str | None = field(default=None, repr=False)   # signs its bodies: made here, shown once
    hook_updated_at: int | None = None



# --- validation ------------------------------------------------------------------------------------


def clean_check_text(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise Invalid("確認の文言を入力してください（例：お元気ですか？）。")
    if "\n" in text or "\r" in text:
        raise Invalid("確認の文言は1行にしてください。")
    if len(text) > CHECK_MAX:
        raise Invalid(f"確認の文言は{CHECK_MAX}文字以内にしてください（いま{len(text)}文字です）。")
    return text


def clean_quotes(text: str) -> tuple[str, ...]:
    """One quote per line; blank lines are dropped. () means the built-in proverbs."""
    quotes = tuple(line.strip() for line in (text or "").replace("\r\n", "\n").split("\n") if line.strip())
    if len(quotes) > QUOTES_MAX:
        raise Invalid(f"名言は{QUOTES_MAX}件までにしてください（いま{len(quotes)}件です）。")
    for n, quote in enumerate(quotes, 1):
        if len(quote) > QUOTE_MAX:
            raise Invalid(f"名言の{n}件目「{quote[:12]}…」が長すぎます。1件{QUOTE_MAX}文字以内にしてください"
                          f"（いま{len(quote)}文字です）。")
    return quotes


def clean_timezone(name: str) -> str:
    name = (name or "").strip()
    if not name or name not in available_timezones():
        raise Invalid("タイムゾーンを一覧から選んでください。")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid("タイムゾーンを一覧から選んでください。") from None
    return name


STAFF_CALL_LIMIT_HOURS = 12          # the default: two reminders gone by and nobody has closed it
STAFF_CALL_LIMIT_RANGE = (1, 168)    # an hour to a week


def clean_limit(value: str) -> int:
    raw = str(value).strip().translate(str.maketrans("０１２３４５６７８９", "0123456789"))
    lo, hi = STAFF_CALL_LIMIT_RANGE
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise Invalid(f"上限は {lo} から {hi} までの時間（整数）で入力してください。")
    return int(raw)


def staff_call_limit_ms(s: "TenantSettings | None") -> int:
    hours = s.staff_call_limit_hours if s is not None and s.staff_call_limit_hours else STAFF_CALL_LIMIT_HOURS
    return hours * 3_600_000


HOOK_URL_MAX = 500


def clean_hook_url(value: str) -> str:
    """An https:// address (http:// only to this machine, for a receiver beside anpi)."""
    value = (value or "").strip()
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    local = parts is not None and parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")
    if (parts is None or len(value) > HOOK_URL_MAX or not parts.hostname or parts.username or parts.password
            or not (parts.scheme == "https" or local) or any(c.isspace() for c in value)):
        raise Invalid(f"送信先は https:// で始まるアドレス（{HOOK_URL_MAX}文字まで、ID・パスワードを含めない）で入力してください。")
    return value


def new_hook_secret() -> str:
    return secrets.token_urlsafe(32)


def clean_secret(value: str) -> str:
    value = (value or "").strip()
    if not SECRET_PATTERN.match(value):
        raise Invalid("チャネルシークレットは、LINE Developers コンソールに表示される英数字（空白なし）を"
                      "そのまま貼り付けてください。")
    return value


def clean_token(value: str) -> str:
    value = (value or "").strip()
    if not TOKEN_PATTERN.match(value):
        raise Invalid("チャネルアクセストークンは、LINE Developers コンソールで発行した長期のトークン（空白なし）を"
                      "そのまま貼り付けてください。")
    return value


# --- changing them (pure: each backend stores the record this returns) --------------------------------


_KEEP = object()


def merged(old: TenantSettings | None, at: int, *, check_text=_KEEP, quotes=_KEEP, timezone=_KEEP,
           channel_secret=_KEEP, channel_access_token=_KEEP, staff_call_limit_hours=_KEEP,
           forbid_long_intervals=_KEEP, hook_url=_KEEP, hook_secret=_KEEP) -> TenantSettings:
    """`old` with the parts passed replaced (None clears one back to its default); the rest is kept.
    Every value is checked: `Invalid` means nothing is to be written."""
    new = old or TenantSettings(updated_at=at)
    if check_text is not _KEEP:
        new = replace(new, check_text=None if check_text is None else clean_check_text(check_text))
    if quotes is not _KEEP:
        cleaned = None if quotes is None else (clean_quotes(quotes) if isinstance(quotes, str)
                                               else clean_quotes("\n".join(quotes)))
        new = replace(new, quotes=cleaned or None)
    if timezone is not _KEEP:
        new = replace(new, timezone=None if timezone is None else clean_timezone(timezone))
    if channel_secret is not _KEEP:
        new = replace(new, channel_secret=None if channel_secret is None else clean_secret(channel_secret),
                      secret_updated_at=at)
    if staff_call_limit_hours is not _KEEP:
        new = replace(new, staff_call_limit_hours=None if staff_call_limit_hours is None
                      else clean_limit(staff_call_limit_hours))
    if hook_url is not _KEEP:
        new = replace(new, hook_url=None if not hook_url else clean_hook_url(hook_url), hook_updated_at=at)
        if not hook_url:
            new = replace(new, hook_secret=None)
    if hook_secret is not _KEEP:
        new = replace(new, hook_secret=hook_secret or None, hook_updated_at=at)
    if forbid_long_intervals is not _KEEP:
        new = replace(new, forbid_long_intervals=bool(forbid_long_intervals))
    if channel_access_token is not _KEEP:
        new = replace(new, channel_access_token=None if channel_access_token is None
                      else clean_token(channel_access_token), token_updated_at=at)
    return replace(new, updated_at=at)


def to_obj(s: TenantSettings) -> dict:
    """The record as plain fields (None left out), for a backend to store."""
    obj = {"check_text": s.check_text, "quotes": list(s.quotes) if s.quotes else None, "timezone": s.timezone,
           "channel_secret": s.channel_secret, "channel_access_token": s.channel_access_token,
           "secret_updated_at": s.secret_updated_at, "token_updated_at": s.token_updated_at,
           "updated_at": s.updated_at, "staff_call_limit_hours": s.staff_call_limit_hours,
           "forbid_long_intervals": 1 if s.forbid_long_intervals else None, "hook_url": s.hook_url,
           "hook_secret": s.hook_secret, "hook_updated_at": s.hook_updated_at}
    return {k: v for k, v in obj.items() if v is not None}


def from_obj(obj: dict) -> TenantSettings:
    quotes = obj.get("quotes")
    return TenantSettings(obj.get("check_text"), tuple(quotes) if quotes else None, obj.get("timezone"),
                          obj.get("channel_secret"), obj.get("channel_access_token"), obj.get("secret_updated_at"),
                          obj.get("token_updated_at"), obj.get("updated_at") or 0, obj.get("staff_call_limit_hours"),
                          bool(obj.get("forbid_long_intervals")), obj.get("hook_url"), obj.get("hook_secret"),
                          obj.get("hook_updated_at"))


# --- what the runtime uses -----------------------------------------------------------------------------


def tenant_with(seed: Tenant, s: TenantSettings | None) -> Tenant:
    """The tenant as it runs: the seed (from the environment) with what is stored here laid over it."""
    if s is None:
        return seed
    return replace(seed, channel_secret=s.channel_secret or seed.channel_secret,
                   channel_access_token=s.channel_access_token or seed.channel_access_token,
                   timezone=s.timezone or seed.timezone, long_intervals=not s.forbid_long_intervals,
                   hook_url=s.hook_url or "", hook_secret=s.hook_secret or "")


def texts_with(base: Texts, s: TenantSettings | None) -> Texts:
    """The sender's wording: the stored question and quotes, or the base's (the built-in ones)."""
    if s is None:
        return base
    return replace(base, check=s.check_text or base.check, quotes=s.quotes or base.quotes,
                   long_intervals=not s.forbid_long_intervals)


def tail(value: str | None) -> str:
    """At most the last four characters of a credential, for staff to tell which one is set."""
    return value[-4:] if value and len(value) >= 16 else ""
