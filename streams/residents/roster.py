"""A municipality's 見守り roster as a CSV file (Excel's exports: UTF-8, with or without its BOM, or
Shift_JIS), read into rows anpi can register, with every row's problem said before anything is
stored (the dry run). Pure: bytes in, rows and problems out.

Columns, by their header (any order; others are ignored):

    氏名 (required)  ふりがな  電話 or 電話番号 (required for 見守り)  地区 (the tenant's area, by name or id)
    サービス (見守り | 安否通知; default 見守り)  間隔 (毎日 … 30日に1回; default 毎日)
    曜日 (for 毎週 and 2週間に1回)  時刻 (9:00, 9時, 午前9時 …; default 9:00)  住所  メモ
"""
from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from dataclasses import asdict, dataclass

from agents.prompts import INTERVAL_NAMES, SERVICE_NAMES, WEEKDAY_NAMES
from schemas.settings import WATCH, WEEKDAYS, MemberSettings, Schedule
from streams.line.webhook_events import phone_number
from streams.residents.profile import LABELS, LIMITS, Profile

MAX_ROWS = 20_000
MAX_BYTES = 4 * 1024 * 1024
HEADERS = {"氏名": "name", "名前": "name", "ふりがな": "kana", "フリガナ": "kana", "電話": "phone", "電話番号": "phone",
           "地区": "area", "サービス": "service", "間隔": "interval", "曜日": "weekday", "時刻": "time",
           "時間": "time", "住所": "address", "メモ": "note", "連絡メモ": "note"}
_SERVICES = {name: key for key, name in SERVICE_NAMES.items()}
_INTERVALS = {name: key for key, name in INTERVAL_NAMES.items()} | {"毎週1回": "weekly", "隔週": "biweekly"}
_WEEKDAYS = {name: key for key, name in WEEKDAY_NAMES.items()} | {name[0]: key for key, name in WEEKDAY_NAMES.items()}
_TIME = re.compile(r"^(午前|午後)?(\d{1,2})(?:[:時](\d{2})?分?)?$")


@dataclass(frozen=True, slots=True)
class Row:
    """One resident to register: what the engine needs (service, schedule, phone, area) and the
    profile staff keep. `line` is the file's line number, for the dry run's list."""
    line: int
    name: str
    kana: str
    phone: str | None
    area: str | None
    service: str
    interval: str
    weekday: str | None
    minute: int
    address: str
    note: str

    def settings(self, member: str, zone: str) -> MemberSettings:
        weekday = WEEKDAYS.index(self.weekday) if self.weekday is not None else None
        return MemberSettings(member, self.service, Schedule(self.interval, self.minute, zone, weekday), self.phone,
                              (), self.area)

    def profile(self, at: int, by: str) -> Profile:
        return Profile(self.name, self.kana, self.address, self.note, "", at, by)

    def dumps(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @staticmethod
    def loads(text: str) -> "Row":
        return Row(**json.loads(text))


@dataclass(frozen=True, slots=True)
class Read:
    rows: list[Row]
    problems: list[tuple[int, str]]   # (line, what is wrong), in file order: nothing is stored while any


def decode(data: bytes) -> str:
    """The file's text: UTF-8 (Excel's 「CSV UTF-8」, with its BOM) or Shift_JIS (Excel's plain 「CSV」)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp932")
    except UnicodeDecodeError:
        raise ValueError("文字コードが読めません。Excelで「CSV UTF-8」か「CSV」として保存し直してください。") from None


def read(data: bytes, areas: dict[str, str]) -> Read:
    """`areas`: the tenant's areas, id → name (a row may name either)."""
    if len(data) > MAX_BYTES:
        return Read([], [(0, f"ファイルが大きすぎます（{MAX_BYTES // (1024 * 1024)}MBまで）。分けてください。")])
    try:
        text = decode(data)
    except ValueError as e:
        return Read([], [(0, str(e))])
    lines = list(csv.reader(io.StringIO(text)))
    if not lines:
        return Read([], [(0, "ファイルが空です。")])
    columns = [HEADERS.get(unicodedata.normalize("NFKC", h).strip()) for h in lines[0]]
    if "name" not in columns:
        return Read([], [(1, "1行目に「氏名」の列が見つかりません（1行目は、氏名・電話・地区などの見出しにしてください）。")])
    by_name = {name: key for key, name in areas.items()}
    rows, problems = [], []
    for number, cells in enumerate(lines[1:MAX_ROWS + 2], start=2):
        if number == MAX_ROWS + 2:
            problems.append((number, f"{MAX_ROWS}行までです。分けてください。"))
            break
        if not any(c.strip() for c in cells):
            continue
        values = {col: unicodedata.normalize("NFKC", cell).strip() for col, cell in zip(columns, cells) if col}
        row, wrong = _row(number, values, areas, by_name)
        if wrong:
            problems += [(number, w) for w in wrong]
        else:
            rows.append(row)
    return Read(rows, problems)


def _row(number: int, v: dict, areas: dict, by_name: dict) -> tuple[Row | None, list[str]]:
    wrong = []
    name, kana = " ".join(v.get("name", "").split()), " ".join(v.get("kana", "").split())
    if not name:
        wrong.append("氏名がありません。")
    service = _SERVICES.get(v.get("service") or SERVICE_NAMES[WATCH])
    if service is None:
        wrong.append(f"サービスは「{'」か「'.join(SERVICE_NAMES.values())}」にしてください。")
    phone = phone_number(v["phone"]) if v.get("phone") else None
    if v.get("phone") and phone is None:
        wrong.append("電話番号が読めません（例：090-1234-5678）。")
    elif phone is None and service == WATCH:
        wrong.append("見守りには電話番号が要ります。")
    interval = _INTERVALS.get(v.get("interval") or "毎日")
    if interval is None:
        wrong.append(f"間隔は「{'」「'.join(INTERVAL_NAMES.values())}」のどれかにしてください。")
    weekday = _WEEKDAYS.get(v.get("weekday", "")) if v.get("weekday") else None
    if interval in ("weekly", "biweekly") and weekday is None:
        wrong.append("毎週・2週間に1回には、曜日が要ります（例：月曜日）。")
    minute = _minute(v.get("time") or "9:00")
    if minute is None:
        wrong.append("時刻が読めません（例：9:00、午後2時）。")
    area = v.get("area") or None
    if area is not None:
        area = area if area in areas else by_name.get(area)
        if area is None:
            wrong.append("地区が、設定にある地区のどれとも合いません。")
    address, note = v.get("address", ""), v.get("note", "")
    for field, text in (("name", name), ("kana", kana), ("address", address), ("note", note)):
        if len(text) > LIMITS[field]:
            wrong.append(f"{LABELS[field]}が長すぎます（{LIMITS[field]}文字まで）。")
    if wrong:
        return None, wrong
    return Row(number, name, kana, phone, area, service, interval,
               weekday if interval in ("weekly", "biweekly") else None, minute, address, note), []


def _minute(text: str) -> int | None:
    found = _TIME.fullmatch(text.replace(" ", ""))
    if found is None:
        return None
    half, hour, minute = found.group(1), int(found.group(2)), int(found.group(3) or 0)
    if half == "午後" and hour < 12:
        hour += 12
    if half == "午前" and hour == 12:
        hour = 0
    return hour * 60 + minute if 0 <= hour < 24 and 0 <= minute < 60 else None
