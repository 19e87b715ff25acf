"""LINE message objects as HTML that looks like the chat: the preview staff see before they send.

It renders the very message objects the sender hands to LINE (agents/notices.messages), not a
second description of them, so what staff check is what residents get. Only what our cards use is
drawn (bubble with header / body / footer, boxes, text, separators, buttons, plain text); anything
else shows as a grey placeholder. No script: the admin screen's CSP allows none.
"""
from __future__ import annotations

from markupsafe import Markup, escape

SIZES = {"xxs": 11, "xs": 13, "sm": 14, "md": 16, "lg": 19, "xl": 22, "xxl": 29, "3xl": 35, "4xl": 48, "5xl": 74}
SPACES = {"none": 0, "xs": 2, "sm": 4, "md": 8, "lg": 12, "xl": 16, "xxl": 20}
WIDTHS = {"nano": 120, "micro": 160, "deca": 220, "hecto": 241, "kilo": 260, "mega": 300, "giga": 386}


def _px(value, table: dict, default: int = 0) -> int:
    if isinstance(value, str) and value.endswith("px"):
        try:
            return int(float(value[:-2]))
        except ValueError:
            return default
    return table.get(value, default)


def _color(value, default: str) -> str:
    value = str(value or "")
    ok = value.startswith("#") and len(value) in (4, 7, 9) and all(c in "0123456789abcdefABCDEF" for c in value[1:])
    return value if ok else default


def render(messages: list[dict]) -> Markup:
    """The messages of one request, as a LINE chat would show them (newest at the bottom)."""
    return Markup("").join(_message(m) for m in messages)


def _message(m: dict) -> Markup:
    kind = m.get("type")
    if kind == "flex" and isinstance(m.get("contents"), dict) and m["contents"].get("type") == "bubble":
        return Markup('<div class="line-msg">{}</div>').format(_bubble(m["contents"]))
    if kind in ("text", "textV2"):
        return Markup('<div class="line-msg"><div class="line-text">{}</div></div>').format(m.get("text", ""))
    return Markup('<div class="line-msg"><div class="line-text muted">（{}）</div></div>').format(kind)


def _bubble(b: dict) -> Markup:
    width = WIDTHS.get(b.get("size", "mega"), 300)
    parts = []
    for block in ("header", "body", "footer"):
        box = b.get(block)
        if isinstance(box, dict):
            parts.append(Markup('<div class="line-{}">{}</div>').format(block, _component(box, "vertical")))
    return Markup('<div class="line-bubble" style="width:{}px">{}</div>').format(width, Markup("").join(parts))


def _component(c: dict, parent: str, first: bool = True, spacing: int = 0) -> Markup:
    kind = c.get("type")
    margin = 0 if first else _px(c.get("margin"), SPACES, spacing)
    side = "top" if parent != "horizontal" else "left"
    outer = f"margin-{side}:{margin}px;" if margin else ""
    if kind == "box":
        layout = c.get("layout", "vertical")
        gap = _px(c.get("spacing"), SPACES)
        style = outer + ("display:flex;flex-direction:row;" if layout != "vertical" else "")
        if c.get("backgroundColor"):
            style += f"background:{_color(c['backgroundColor'], '#ffffff')};"
        if c.get("paddingAll"):
            style += f"padding:{_px(c['paddingAll'], SPACES)}px;"
        inner = Markup("").join(_component(child, layout, i == 0, gap)
                                for i, child in enumerate(c.get("contents") or []))
        return Markup('<div class="line-box" style="{}">{}</div>').format(style, inner)
    if kind == "text":
        align = {"center": "center", "end": "right"}.get(c.get("align"), "left")
        style = (outer + f"font-size:{SIZES.get(c.get('size', 'md'), 16)}px;"
                 f"color:{_color(c.get('color'), '#111111')};"
                 f"font-weight:{'bold' if c.get('weight') == 'bold' else 'normal'};"
                 f"text-align:{align};"
                 + ("white-space:pre-wrap;" if c.get("wrap") else "white-space:nowrap;overflow:hidden;"))
        return Markup('<div class="line-t" style="{}">{}</div>').format(style, c.get("text", ""))
    if kind == "separator":
        return Markup('<hr class="line-sep" style="{}">').format(outer)
    if kind == "button":
        action = c.get("action") or {}
        primary = c.get("style") == "primary"
        color = _color(c.get("color"), "#1A7F37" if primary else "#DDDDDD")
        style = outer + (f"background:{color};color:#fff;" if primary else f"background:#eeeeee;color:{color};")
        return Markup('<div class="line-button" style="{}" data-postback="{}">{}</div>').format(
            style, action.get("data", ""), action.get("label", ""))
    return Markup('<div class="line-t muted">（{}）</div>').format(escape(str(kind)))
