"""The LINE rich menu anpi puts under every resident's chat: 「元気です」, 「助けてほしい」 and
「マイページ」, always at hand (the check card has the first two too, but scrolls away).

    anpi richmenu install   ─▶ POST /v2/bot/richmenu (the areas below) ─▶ its image to the data API
                               (api-data.line.me) ─▶ the default for every friend ─▶ older anpi
                               menus deleted

Each area is a postback the webhook already reads (streams/line/webhook_events.py): action=ok is an
OK (a sign of life, with or without a check open), action=help asks once before anyone is called,
action=mypage sends the signed My Page link. The image is richmenu.png, 2500×843, drawn from
richmenu.html (`chromium --headless --screenshot=richmenu.png --window-size=2500,843 richmenu.html`
with fonts-ipafont-gothic): big words in white on three colours, for eyes that are no longer young.
"""
from __future__ import annotations

import logging
from pathlib import Path

import aiohttp

from agents.messages import HELP_ACTION
from agents.prompts import MYPAGE_ACTION

log = logging.getLogger("anpi.richmenu")
IMAGE = Path(__file__).with_name("richmenu.png")
NAME = "anpi"                     # how anpi knows its own menus among the channel's
WIDTH, HEIGHT = 2500, 843
AREAS = (("元気です", "action=ok"), ("助けてほしい", f"action={HELP_ACTION}"), ("マイページ", f"action={MYPAGE_ACTION}"))


def menu() -> dict:
    """The rich menu object (LINE's RichMenuRequest): three equal areas, shown open."""
    third = WIDTH // len(AREAS)
    areas = [{"bounds": {"x": i * third, "y": 0, "width": third if i < len(AREAS) - 1 else WIDTH - i * third,
                         "height": HEIGHT},
              "action": {"type": "postback", "label": label, "data": data, "displayText": label}}
             for i, (label, data) in enumerate(AREAS)]
    return {"size": {"width": WIDTH, "height": HEIGHT}, "selected": True, "name": NAME, "chatBarText": "メニュー",
            "areas": areas}


class Failed(RuntimeError):
    """LINE refused a step; the message says which (never the token)."""


async def install(api: str, data_api: str, token: str, session: aiohttp.ClientSession | None = None) -> str:
    """Create the menu, upload its image, make it every friend's default, delete older anpi menus;
    the new menu's id."""
    own = session is None
    session = session or aiohttp.ClientSession()
    auth = {"Authorization": f"Bearer {token}"}
    try:
        menu_id = (await _call(session, "post", f"{api}/v2/bot/richmenu", "create the menu", json=menu(),
                               headers=auth))["richMenuId"]
        await _call(session, "post", f"{data_api}/v2/bot/richmenu/{menu_id}/content", "upload its image",
                    data=IMAGE.read_bytes(), headers={**auth, "Content-Type": "image/png"})
        await _call(session, "post", f"{api}/v2/bot/user/all/richmenu/{menu_id}", "make it the default",
                    headers=auth)
        listed = await _call(session, "get", f"{api}/v2/bot/richmenu/list", "list the menus", headers=auth)
        for old in listed.get("richmenus", []):
            if old.get("name") == NAME and old.get("richMenuId") != menu_id:
                await _call(session, "delete", f"{api}/v2/bot/richmenu/{old['richMenuId']}", "delete an older menu",
                            headers=auth)
        log.info("rich menu %s installed as every friend's default", menu_id)
        return menu_id
    finally:
        if own:
            await session.close()


async def _call(session: aiohttp.ClientSession, method: str, url: str, what: str, **kw) -> dict:
    async with session.request(method, url, timeout=aiohttp.ClientTimeout(total=30), **kw) as r:
        if r.status >= 300:
            try:
                reason = str((await r.json(content_type=None)).get("message", ""))
            except (ValueError, AttributeError, aiohttp.ClientError):
                reason = ""
            raise Failed(f"could not {what}: LINE answered {r.status} {reason}".strip())
        text = await r.text()
        return (await r.json(content_type=None)) if text.strip() else {}
