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

import csv
import io
import json
import re
import secrets
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from agents.messages import Texts
from schemas.areas import Area
from schemas.tenant import Tenant
from streams.jma.bulletin import parse_threshold
from streams.sealed import seal, unseal

CHECK_MAX = 40          # characters of the question on the check card
PRIVACY_MAX = 300       # characters of the privacy notice on the sign-up card
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
class QuakeConfig:
    """When the 気象庁's bulletins start this tenant's roll-calls (streams/jma/trigger.py)."""
    areas: tuple[Area, ...] = ()
    threshold: str = "5-"        # 震度 as JMA writes it: 5弱 or more, by default
    hold_minutes: int = 0        # a roll-call waits this long, so that staff can stop it; 0: at once
    drills: bool = False         # 訓練 bulletins start drills here

    def to_obj(self) -> dict:
        return {"areas": [a.to_obj() for a in self.areas], "threshold": self.threshold,
                "hold_minutes": self.hold_minutes, "drills": self.drills}

    @staticmethod
    def from_obj(obj: dict) -> "QuakeConfig":
        return QuakeConfig(tuple(Area.from_obj(a) for a in obj.get("areas", ())), obj.get("threshold", "5-"),
                           int(obj.get("hold_minutes", 0)), bool(obj.get("drills", False)))


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
    quake: QuakeConfig | None = None            # areas and the 気象庁 trigger (None: no areas, no roll-calls)
    retention_days: int | None = None           # inbox and effect rows older than this are pruned (None: default)
    privacy_notice: str | None = None           # shown before 「登録する」 (None: agents/prompts.PRIVACY_TEXT)



# --- validation ------------------------------------------------------------------------------------


def clean_privacy(text: str) -> str:
    text = " ".join((text or "").split())
    if not text:
        raise Invalid("個人情報の取り扱いを入力してください（空にするときは「元に戻す」を押してください）。")
    if len(text) > PRIVACY_MAX:
        raise Invalid(f"個人情報の取り扱いは{PRIVACY_MAX}文字以内にしてください（いま{len(text)}文字）。"
                      "くわしい説明は、マイページの利用規約に書けます。")
    return text


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


def _whole_number(value: str, bounds: tuple[int, int], rule: str) -> int:
    """A whole number within `bounds`, typed as people type it (full-width digits too); else
    Invalid(rule), the rule said with the bounds."""
    raw = str(value).strip().translate(str.maketrans("０１２３４５６７８９", "0123456789"))
    lo, hi = bounds
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise Invalid(rule.format(lo=lo, hi=hi))
    return int(raw)


def clean_limit(value: str) -> int:
    return _whole_number(value, STAFF_CALL_LIMIT_RANGE, "上限は {lo} から {hi} までの時間（整数）で入力してください。")


RETENTION_DAYS = 365                 # the default: a year of records, then counts only
RETENTION_RANGE = (30, 3650)         # a month to ten years


def clean_retention(value: str) -> int:
    return _whole_number(value, RETENTION_RANGE, "記録を残す期間は {lo} から {hi} までの日数（整数）で入力してください。")


def retention_ms(s: "TenantSettings | None") -> int:
    days = s.retention_days if s is not None and s.retention_days else RETENTION_DAYS
    return days * 86_400_000


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


AREAS_MAX = 2000       # a city's 町丁目 fit; a typo'd file of a million lines does not
AREA_ID_MAX = AREA_NAME_MAX = 40
HOLD_MINUTES_MAX = 60  # a hold longer than an hour is no roll-call after a quake
_AREA_ID = re.compile(r"[^\s,]{1,40}")


def clean_areas(text: str) -> tuple[Area, ...]:
    """Areas from CSV text, one per line: id, name, JMA city code (7 digits), JMA 細分区域 code (3
    digits); the codes may be left empty, and a first line starting "id," is a header."""
    rows = [row for row in csv.reader(io.StringIO((text or "").lstrip("\ufeff"))) if any(c.strip() for c in row)]
    if rows and rows[0] and rows[0][0].strip().lower() == "id":
        rows = rows[1:]
    if len(rows) > AREAS_MAX:
        raise Invalid(f"地区は{AREAS_MAX}件までにしてください（いま{len(rows)}件です）。")
    areas, seen = [], set()
    for n, row in enumerate(rows, 1):
        cells = [c.strip() for c in row] + [""] * (4 - len(row))
        if len(row) > 4:
            raise Invalid(f"地区の{n}行目: 「ID,名前,市町村コード,細分区域コード」の4つまでにしてください。")
        area_id, name, city, region = cells[:4]
        if not _AREA_ID.fullmatch(area_id):
            raise Invalid(f"地区の{n}行目: IDは空白やカンマのない{AREA_ID_MAX}文字までにしてください。")
        if area_id in seen:
            raise Invalid(f"地区の{n}行目: ID「{area_id}」が2回あります。")
        if not name or len(name) > AREA_NAME_MAX:
            raise Invalid(f"地区の{n}行目: 名前は{AREA_NAME_MAX}文字までで入れてください。")
        if city and not re.fullmatch(r"[0-9]{7}", city):
            raise Invalid(f"地区の{n}行目: 市町村コードは気象庁の7桁の数字です（例：0120200）。")
        if region and not re.fullmatch(r"[0-9]{3}", region):
            raise Invalid(f"地区の{n}行目: 細分区域コードは気象庁の3桁の数字です（例：106）。")
        seen.add(area_id)
        areas.append(Area(area_id, name, city or None, region or None))
    return tuple(areas)


def clean_threshold(value: str) -> str:
    try:
        return parse_threshold(value)
    except ValueError:
        raise Invalid("震度は「5弱」「5強」「6弱」のように入れてください。") from None


def clean_hold(value) -> int:
    raw = str(value).strip().translate(str.maketrans("０１２３４５６７８９", "0123456789"))
    if not raw.isdigit() or int(raw) > HOLD_MINUTES_MAX:
        raise Invalid(f"待つ時間は 0 から {HOLD_MINUTES_MAX} 分までの整数で入れてください。")
    return int(raw)


def quake_config(areas_text: str, threshold: str = "5弱", hold_minutes="0", drills: bool = False) -> QuakeConfig:
    return QuakeConfig(clean_areas(areas_text), clean_threshold(threshold), clean_hold(hold_minutes), bool(drills))


# --- changing them (pure: each backend stores the record this returns) --------------------------------


_KEEP = object()


def merged(old: TenantSettings | None, at: int, *, check_text=_KEEP, quotes=_KEEP, timezone=_KEEP,
           channel_secret=_KEEP, channel_access_token=_KEEP, staff_call_limit_hours=_KEEP,
           forbid_long_intervals=_KEEP, hook_url=_KEEP, hook_secret=_KEEP, quake=_KEEP,
           retention_days=_KEEP, privacy_notice=_KEEP) -> TenantSettings:
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
    if quake is not _KEEP:  # a QuakeConfig made by quake_config (checked there), or None
        new = replace(new, quake=quake)
    if privacy_notice is not _KEEP:
        new = replace(new, privacy_notice=None if privacy_notice is None else clean_privacy(privacy_notice))
    if retention_days is not _KEEP:
        new = replace(new, retention_days=None if retention_days is None else clean_retention(retention_days))
    if channel_access_token is not _KEEP:
        new = replace(new, channel_access_token=None if channel_access_token is None
                      else clean_token(channel_access_token), token_updated_at=at)
    return replace(new, updated_at=at)


def to_obj(s: TenantSettings) -> dict:
    """The record as plain fields (None left out), for a backend to store: the channel's secret and
    token and the outgoing webhook's secret sealed (streams/sealed.py)."""
    obj = {"check_text": s.check_text, "quotes": list(s.quotes) if s.quotes else None, "timezone": s.timezone,
           "channel_secret": seal(s.channel_secret), "channel_access_token": seal(s.channel_access_token),
           "secret_updated_at": s.secret_updated_at, "token_updated_at": s.token_updated_at,
           "updated_at": s.updated_at, "staff_call_limit_hours": s.staff_call_limit_hours,
           "forbid_long_intervals": 1 if s.forbid_long_intervals else None, "hook_url": s.hook_url,
           "hook_secret": seal(s.hook_secret), "hook_updated_at": s.hook_updated_at,
           "quake": json.dumps(s.quake.to_obj(), ensure_ascii=False) if s.quake is not None else None,
           "retention_days": s.retention_days, "privacy_notice": s.privacy_notice}
    return {k: v for k, v in obj.items() if v is not None}


def from_obj(obj: dict) -> TenantSettings:
    quotes = obj.get("quotes")
    return TenantSettings(obj.get("check_text"), tuple(quotes) if quotes else None, obj.get("timezone"),
                          unseal(obj.get("channel_secret")), unseal(obj.get("channel_access_token")),
                          obj.get("secret_updated_at"),
                          obj.get("token_updated_at"), obj.get("updated_at") or 0, obj.get("staff_call_limit_hours"),
                          bool(obj.get("forbid_long_intervals")), obj.get("hook_url"), unseal(obj.get("hook_secret")),
                          obj.get("hook_updated_at"),
                          QuakeConfig.from_obj(json.loads(obj["quake"])) if obj.get("quake") else None,
                          obj.get("retention_days"), obj.get("privacy_notice"))


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
                   long_intervals=not s.forbid_long_intervals, privacy=s.privacy_notice or base.privacy,
                   areas=tuple((a.id, a.name) for a in s.quake.areas) if s.quake is not None else ())


def tail(value: str | None) -> str:
    """At most the last four characters of a credential, for staff to tell which one is set."""
    return value[-4:] if value and len(value) >= 16 else ""
