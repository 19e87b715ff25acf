"""The pieces every LINE message here is built from (Flex text, buttons, the bubble). Pure.

One place for them, so the check card, the conversations and the notices look alike and respect the
same limits (messaging-api.yml).
"""
from __future__ import annotations

ALT_TEXT_MAX = 400
# Colours chosen for contrast with white text (WCAG AA), not LINE's lighter brand green.
BUTTON_COLOR = "#1A7F37"
MUTED_COLOR = "#555555"
WARN_COLOR = "#B42318"   # a warning: dark red, readable on white


def text(value: str, **style) -> dict:
    return {"type": "text", "text": value, "wrap": True, **style}


def button(action: dict, primary: bool = True) -> dict:
    if primary:
        return {"type": "button", "style": "primary", "height": "md", "color": BUTTON_COLOR, "action": action}
    return {"type": "button", "style": "secondary", "height": "md", "action": action}


def footer(buttons: list[dict], spacing: str | None = None) -> dict:
    box = {"type": "box", "layout": "vertical", "contents": buttons}
    if spacing:
        box["spacing"] = spacing
    return box


def card(alt_text: str, body: list[dict], buttons: list[dict], spacing: str | None = None) -> dict:
    """A Flex message of one bubble: `body` above, the buttons in the footer."""
    return {
        "type": "flex",
        "altText": alt_text[:ALT_TEXT_MAX],
        "contents": {
            "type": "bubble",
            "size": "mega",
            "body": {"type": "box", "layout": "vertical", "spacing": "md", "contents": body},
            "footer": footer(buttons, spacing),
        },
    }
