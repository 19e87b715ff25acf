"""A tenant's look on My Page: the top image and the terms of use each municipality replaces.

Stored by a registry backend (streams/tenants/registry.py); staff set it from the admin screen, My
Page reads it. Either part may be missing: My Page then shows its own default (streams/mypage).

Images are checked by their first bytes, not by the name or type a browser claims, and only bitmap
formats are taken: an uploaded SVG could carry script, and a resident's page must never run any.
"""
from __future__ import annotations

from dataclasses import dataclass

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


_KEEP = object()


def merged(old: Look | None, at: int, *, top_image=_KEEP, terms=_KEEP) -> Look:
    """`old` with the image and/or the terms replaced (a part not passed is kept; None clears it back
    to the default). ValueError, in words staff can act on, for an image that is not one or too large."""
    old = old or Look(None, None, None, at)
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
    return Look(image, kind, text, at)
