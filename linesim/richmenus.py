"""LINE's rich menu endpoints, as far as anpi uses them (messaging-api.yml): create one (its body
checked against RichMenuRequest), upload its image (PNG or JPEG, at most 1 MB, of the menu's own
size, once), make it every friend's default, list and delete. What the channel shows its friends is
`SimState.rich_menus.default(channel)`: the menu object, for a test to tap an area of."""
from __future__ import annotations

import struct
import uuid
from typing import Any

from aiohttp import web

from . import spec

IMAGE_MAX = 1024 * 1024


class RichMenus:
    """Per channel: its menus by id, the ids with an image, and the default one."""

    def __init__(self):
        self.menus: dict[tuple[str, str], dict[str, Any]] = {}
        self.images: dict[tuple[str, str], bytes] = {}
        self.defaults: dict[str, str] = {}

    def default(self, channel: str) -> dict[str, Any] | None:
        menu_id = self.defaults.get(channel)
        return {**self.menus[(channel, menu_id)], "richMenuId": menu_id} if menu_id else None


def _size_of(image: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG or a baseline/progressive JPEG, else None."""
    if image[:8] == b"\x89PNG\r\n\x1a\n" and image[12:16] == b"IHDR":
        return struct.unpack(">II", image[16:24])
    if image[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(image) and image[i] == 0xFF:
            marker, length = image[i + 1], struct.unpack(">H", image[i + 2:i + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2):
                height, width = struct.unpack(">HH", image[i + 5:i + 9])
                return width, height
            i += 2 + length
    return None


def routes(router: web.UrlDispatcher, endpoint, refusal, as_json) -> None:
    """Mount the endpoints; `endpoint(name, handler)` wraps each as every LINE endpoint is wrapped."""

    async def create(request, state, channel, request_id):
        try:
            body = await request.json()
        except ValueError:
            raise refusal(400, "The request body could not be parsed as JSON") from None
        problems = spec.request_validator("post", "/v2/bot/richmenu").problems(body)
        if problems:
            raise refusal(400, spec.error_body(problems)["message"], [p.as_json() for p in problems])
        menu_id = f"richmenu-{uuid.UUID(int=state._rng.getrandbits(128)).hex}"
        state.rich_menus.menus[(channel.name, menu_id)] = body
        return as_json({"richMenuId": menu_id})

    def known(state, channel, request) -> tuple[tuple[str, str], dict[str, Any]]:
        key = (channel.name, request.match_info["richMenuId"])
        if key not in state.rich_menus.menus:
            raise refusal(404, "Not found")
        return key, state.rich_menus.menus[key]

    async def upload(request, state, channel, request_id):
        key, menu = known(state, channel, request)
        if request.content_type not in ("image/png", "image/jpeg"):
            raise refusal(415, "Unsupported Media Type")
        image = await request.read()
        if len(image) > IMAGE_MAX:
            raise refusal(413, "Request Entity Too Large")
        if _size_of(image) != (menu["size"]["width"], menu["size"]["height"]):
            raise refusal(400, "The image size does not match the rich menu size")
        if key in state.rich_menus.images:
            raise refusal(400, "An image has already been uploaded to the richmenu")
        state.rich_menus.images[key] = image
        return as_json({})

    async def set_default(request, state, channel, request_id):
        key, _ = known(state, channel, request)
        if key not in state.rich_menus.images:
            raise refusal(400, "must upload richmenu image before applying it to user")
        state.rich_menus.defaults[channel.name] = key[1]
        return as_json({})

    async def get_default(request, state, channel, request_id):
        menu_id = state.rich_menus.defaults.get(channel.name)
        if menu_id is None:
            raise refusal(404, "no default richmenu")
        return as_json({"richMenuId": menu_id})

    async def listed(request, state, channel, request_id):
        return as_json({"richmenus": [{**menu, "richMenuId": menu_id} for (ch, menu_id), menu
                                      in state.rich_menus.menus.items() if ch == channel.name]})

    async def delete(request, state, channel, request_id):
        key, _ = known(state, channel, request)
        del state.rich_menus.menus[key]
        state.rich_menus.images.pop(key, None)
        if state.rich_menus.defaults.get(channel.name) == key[1]:
            del state.rich_menus.defaults[channel.name]
        return as_json({})

    router.add_post("/v2/bot/richmenu", endpoint("richmenu", create))
    router.add_post("/v2/bot/richmenu/{richMenuId}/content", endpoint("richmenu_content", upload))
    router.add_post("/v2/bot/user/all/richmenu/{richMenuId}", endpoint("richmenu_default", set_default))
    router.add_get("/v2/bot/user/all/richmenu", endpoint("richmenu_default", get_default))
    router.add_get("/v2/bot/richmenu/list", endpoint("richmenu", listed))
    router.add_delete("/v2/bot/richmenu/{richMenuId}", endpoint("richmenu", delete))
