"""The rich menu (issue 12: 「助けてほしい」 on the rich menu too): the menu object LINE's spec takes,
its image, `anpi richmenu install` against linesim's rich menu endpoints, and a tap on its areas in
a running `anpi serve`."""
from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys

from linesim import Channel, Config, run_linesim, spec, user_id_for
from linesim.residents import postback_event, user_source
from schemas.events import AskHelp, OpenMyPage, Ok
from streams.line import richmenu
from streams.line.webhook_events import parse, route
from test_conversations import TENANT, Town, texts, town


def test_the_menu_is_what_lines_spec_takes_three_areas_across_the_whole_width():
    menu = richmenu.menu()
    assert spec.request_validator("post", "/v2/bot/richmenu").problems(menu) == []
    bounds = [a["bounds"] for a in menu["areas"]]
    assert sum(b["width"] for b in bounds) == richmenu.WIDTH and all(b["height"] == richmenu.HEIGHT for b in bounds)
    assert [b["x"] for b in bounds] == [0, 833, 1666]
    assert [a["action"]["label"] for a in menu["areas"]] == ["元気です", "助けてほしい", "マイページ"]


def test_each_area_is_a_postback_the_webhook_already_reads():
    user = user_id_for("menu-tapper")
    events = [postback_event(user_source(user), a["action"]["data"], reply_token="r" * 32, timestamp=1_796_050_800_000 + i)
              for i, a in enumerate(richmenu.menu()["areas"])]
    body = json.dumps({"destination": "U" + "0" * 32, "events": events}).encode()
    at = 1_796_050_800_000
    assert route("town", parse(body)).events == [Ok(at, user), AskHelp(at + 1, user), OpenMyPage(at + 2, user)]


def test_the_image_is_a_png_of_the_menus_size_under_lines_limit():
    image = richmenu.IMAGE.read_bytes()
    assert image[:8] == b"\x89PNG\r\n\x1a\n" and len(image) <= 1024 * 1024
    assert struct.unpack(">II", image[16:24]) == (richmenu.WIDTH, richmenu.HEIGHT)


def _install(base_url: str, token: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ANPI_CHANNEL_ACCESS_TOKEN"}
    env.update({"ANPI_LINE_API": base_url, **({"ANPI_CHANNEL_ACCESS_TOKEN": token} if token else {})})
    return subprocess.run([sys.executable, "-m", "streams.cli", "richmenu", "install"], env=env, capture_output=True,
                          text=True, timeout=60)


def test_anpi_richmenu_install_makes_it_every_friends_menu_and_replaces_an_older_one():
    channel = Channel("town", "token-" + "t" * 30, "secret-" + "s" * 20)

    async def go():
        async with run_linesim(Config([channel])) as sim:
            first = await asyncio.to_thread(_install, sim.base_url, channel.access_token)
            assert first.returncode == 0, first.stderr
            menus = sim.state.rich_menus
            shown = menus.default("town")
            assert shown["areas"] == richmenu.menu()["areas"] and first.stdout.strip().endswith("every friend's menu now")
            assert menus.images[("town", shown["richMenuId"])] == richmenu.IMAGE.read_bytes()
            second = await asyncio.to_thread(_install, sim.base_url, channel.access_token)
            assert second.returncode == 0, second.stderr
            assert list(menus.menus) == [("town", menus.default("town")["richMenuId"])]   # the older one is gone
            assert menus.default("town")["richMenuId"] != shown["richMenuId"]
            wrong = await asyncio.to_thread(_install, sim.base_url, "not-the-token")
            assert wrong.returncode == 1 and "401" in wrong.stderr and "not-the-token" not in wrong.stderr
            missing = await asyncio.to_thread(_install, sim.base_url, None)
            assert missing.returncode == 2 and "ANPI_CHANNEL_ACCESS_TOKEN" in missing.stderr
            assert {status for (name, status) in sim.state.requests if name.startswith("richmenu")} <= {200, 401}
    asyncio.run(go())


def test_help_from_the_rich_menu_asks_once_before_anyone_is_called(tmp_path):
    resident = user_id_for("menu-resident")

    @town
    async def story(t: Town, store):
        from schemas.events import Register
        from schemas.settings import MemberSettings, Schedule
        store.accept(TENANT.id, None, [(resident, Register(t.clock.now_ms(), MemberSettings(
            resident, "watch", Schedule("1d", 9 * 60, "Asia/Tokyo", None), "09012345678")))])
        assert await asyncio.to_thread(_install, t.sim.base_url, TENANT.channel_access_token) is not None
        menu = t.sim.state.rich_menus.default(TENANT.id)
        assert menu is not None
        help_area = next(a for a in menu["areas"] if a["action"]["label"] == "助けてほしい")
        me = user_source(resident)
        asked = await t.send(me, lambda **kw: postback_event(me, help_area["action"]["data"], **kw))
        assert "よろしいですか" in texts(asked)
        assert not [e for e in store.effects(TENANT.id) if e.effect == "staff_call"]   # nobody yet

    story(tmp_path)
