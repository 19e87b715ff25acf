"""A resident's staff-side profile: what a caller needs to know whom they call. Entered by staff;
never in the engine (it decides nothing), kept beside it, sealed at rest (streams/sealed.py), and
deleted with the resident when they withdraw (退会).

    name        氏名              kana      ふりがな
    address     住所 or 地区       note      連絡メモ (e.g. 耳が遠い、日中はデイサービス)
    key_holder  緊急時の鍵の預け先 (a 訪問 needs it)
"""
from __future__ import annotations

import json
import unicodedata
from dataclasses import asdict, dataclass

from streams.sealed import seal, unseal

FIELDS = ("name", "kana", "address", "note", "key_holder")
LABELS = {"name": "氏名", "kana": "ふりがな", "address": "住所", "note": "連絡メモ", "key_holder": "鍵の預け先"}
LIMITS = {"name": 60, "kana": 60, "address": 200, "note": 500, "key_holder": 200}


class Invalid(ValueError):
    """A field staff typed that cannot be kept; `str(error)` is the sentence to show."""


@dataclass(frozen=True, slots=True)
class Profile:
    name: str = ""
    kana: str = ""
    address: str = ""
    note: str = ""
    key_holder: str = ""
    updated_at: int = 0
    updated_by: str = ""

    def empty(self) -> bool:
        return not any(getattr(self, f) for f in FIELDS)

    def words(self) -> str:
        """What a search looks in, folded as people type (full-width, katakana / hiragana alike)."""
        return fold(" ".join(getattr(self, f) for f in FIELDS))


def clean(form, at: int, by: str) -> Profile:
    values = {}
    for f in FIELDS:
        text = " ".join(str(form.get(f, "")).split()) if f != "note" else str(form.get(f, "")).strip()
        if len(text) > LIMITS[f]:
            raise Invalid(f"{LABELS[f]}は{LIMITS[f]}文字以内にしてください（いま{len(text)}文字）。")
        values[f] = text
    return Profile(**values, updated_at=at, updated_by=by)


def fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(chr(ord(c) - 0x60) if "ァ" <= c <= "ヶ" else c for c in text).replace(" ", "")


def dumps(p: Profile) -> str:
    """The stored form: one sealed JSON object (no name or address in clear)."""
    return seal(json.dumps(asdict(p), ensure_ascii=False, separators=(",", ":")))


def loads(raw: str | bytes) -> Profile:
    obj = json.loads(unseal(raw.decode() if isinstance(raw, bytes) else raw))
    return Profile(**{k: obj.get(k, Profile.__dataclass_fields__[k].default) for k in Profile.__dataclass_fields__})
