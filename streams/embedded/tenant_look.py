"""A tenant's look on My Page: the top image and the terms of use each municipality replaces.

One row per tenant in the embedded store's file; staff set it from the admin screen, My Page reads
it. Either part may be missing: My Page then shows its own default (streams/mypage).

    tenant_look(tenant, top_image BLOB, image_type, terms TEXT, updated_at)

Images are checked by their first bytes, not by the name or type a browser claims, and only bitmap
formats are taken: an uploaded SVG could carry script, and a resident's page must never run any.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS tenant_look (tenant TEXT PRIMARY KEY, top_image BLOB, image_type TEXT, terms TEXT,
                                        updated_at INTEGER NOT NULL) WITHOUT ROWID;
"""
MAX_IMAGE_BYTES = 2 * 1024 * 1024   # a phone photo, resized: plenty for a header on a phone
MAX_TERMS_CHARS = 20_000
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
          (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))


@dataclass(frozen=True, slots=True)
class Look:
    top_image: bytes | None
    image_type: str | None
    terms: str | None
    updated_at: int


def install(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)


def image_type(data: bytes) -> str | None:
    """The image's MIME type from its first bytes (PNG, JPEG, GIF, WebP), or None."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def is_svg(data: bytes) -> bool:
    """Looks like SVG (XML or an <svg> element): refused, named as such in the message."""
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<?xml", b"<svg", b"<!doctype svg")) or b"<svg" in head


def get(db: sqlite3.Connection, tenant: str) -> Look | None:
    row = db.execute("SELECT top_image, image_type, terms, updated_at FROM tenant_look WHERE tenant = ?",
                     (tenant,)).fetchone()
    return Look(row[0], row[1], row[2], row[3]) if row else None


_KEEP = object()


def put(db: sqlite3.Connection, tenant: str, at: int, *, top_image=_KEEP, terms=_KEEP) -> Look:
    """Replace the image and/or the terms (a part not passed is kept; None clears it back to the
    default). ValueError, in words staff can act on, for an image that is not one or too large."""
    old = get(db, tenant) or Look(None, None, None, at)
    image, kind = old.top_image, old.image_type
    if top_image is not _KEEP:
        if top_image is None:
            image, kind = None, None
        else:
            image = bytes(top_image)
            kind = image_type(image)
            if kind is None:
                if is_svg(image):
                    raise ValueError("SVG 画像は使えません（中にプログラムを含められるため）。"
                                     "PNG・JPEG・GIF・WebP のいずれかにしてください。")
                raise ValueError("画像は PNG・JPEG・GIF・WebP のいずれかにしてください。")
            if len(image) > MAX_IMAGE_BYTES:
                raise ValueError(f"画像は {MAX_IMAGE_BYTES // (1024 * 1024)}MB 以下にしてください。")
    text = old.terms
    if terms is not _KEEP:
        text = None if terms is None or not terms.strip() else terms.replace("\r\n", "\n").strip()
        if text is not None and len(text) > MAX_TERMS_CHARS:
            raise ValueError(f"利用規約は {MAX_TERMS_CHARS:,} 文字以内にしてください。")
    db.execute("INSERT OR REPLACE INTO tenant_look VALUES (?, ?, ?, ?, ?)", (tenant, image, kind, text, at))
    return Look(image, kind, text, at)
