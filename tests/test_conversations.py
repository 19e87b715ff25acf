"""Sign-up, the phone number, invitations and groups, end to end through real HTTP: people in linesim
follow the account, tap the quick replies and buttons anpi sent them, type what it asked for, and
anpi (`anpi serve`'s runtime: ingress → SQLite → engine → sender) answers through linesim. Time is
linesim's ManualClock, which the engine and the sender read too."""
import asyncio
import re

import aiohttp
from urllib.parse import unquote

import pytest

from linesim import Channel, Config, ManualClock, run_linesim, user_id_for
from linesim.residents import (follow_event, group_id_for, group_source, join_event, member_joined_event,
                               message_event, postback_event, user_source)
from schemas.tenant import Tenant
from streams.embedded import readside
from streams.embedded.runtime import Runtime
from streams.embedded.serve import ServedRuntime
from streams.embedded.store import Store
from streams.line.sender import Sender

START = 1_796_050_800  # 2026-12-01T00:00+09:00 (a Tuesday), in seconds
HOUR, DAY = 3600, 86400  # seconds, as linesim's clock counts
TENANT = Tenant("town", "secret-" + "s" * 20, "token-" + "t" * 30)


class Town:
    """A running runtime and linesim, and the people who talk to it."""

    def __init__(self, sim, runtime: Runtime, clock: ManualClock):
        self.sim, self.runtime, self.clock = sim, runtime, clock

    def seen(self, to: str) -> list:
        return [d for d in self.sim.state.deliveries if d.to == to and d.delivered]

    async def until(self, condition, what: str, timeout: float = 20.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not condition():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"waited {timeout:.0f} s for {what}")
            await asyncio.sleep(0.02)

    async def send(self, source: dict, make, **kw) -> list[dict]:
        """Post one webhook event and return the messages that arrive for the chat in answer."""
        to = source.get("groupId") or source["userId"]
        before = len(self.seen(to))
        self.clock.advance(2)  # a person takes a moment to read and tap
        token = self.sim.state.issue_reply_token(TENANT.id, source)
        status = await self.sim.state.crowd.post(TENANT.id, [make(reply_token=token, timestamp=self.clock.now_ms(),
                                                                 **kw)])
        assert status == 200
        await self.until(lambda: len(self.seen(to)) > before, f"an answer to {to}")
        await asyncio.sleep(0.1)  # anything else of the same answer
        return [m for d in self.seen(to)[before:] for m in d.messages]

    async def follow(self, user: str) -> list[dict]:
        return await self.send(user_source(user), lambda **kw: follow_event(user, **kw))

    async def tap(self, user: str, label: str, messages: list[dict]) -> list[dict]:
        """Tap the quick reply or card button with this label among the messages last received."""
        data = button(messages, label)["data"]
        return await self.send(user_source(user), lambda **kw: postback_event(user_source(user), data, **kw))

    async def say(self, user: str, text: str) -> list[dict]:
        return await self.send(user_source(user), lambda **kw: message_event(user_source(user), text, **kw))

    async def at(self, moment_s: float) -> None:
        """The clock moves on to `moment_s`; wait until the engine has stepped past it."""
        self.clock.set(moment_s)
        target = int(moment_s * 1000)
        await self.until(lambda: (self.runtime.towns[TENANT.id].engine.last_tick or 0) >= target, "the engine to catch up")
        await asyncio.sleep(0.2)
        await self.runtime.drain()


def nodes(tree):
    """Every object in a message tree, depth first."""
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from nodes(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from nodes(value)


def button(messages: list[dict], label: str) -> dict:
    """The action of the button or quick reply labelled `label`."""
    found = [n for n in nodes(messages) if n.get("label") == label and n.get("type") in ("postback", "uri")]
    assert found, f"no button {label!r} in {messages}"
    return found[0]


def texts(messages: list[dict]) -> str:
    return "\n".join(n["text"] for n in nodes(messages) if isinstance(n.get("text"), str))


def town(test):
    """Run `test(town)` against a fresh runtime and linesim; returns what it returns, and checks that
    LINE accepted every request anpi made (bodies are validated against messaging-api.yml)."""
    def run(tmp_path):
        async def go():
            clock = ManualClock(START)
            store = Store(str(tmp_path / "anpi.db"))
            sender = Sender(TENANT, "http://unused", wall=clock.now)
            runtime = ServedRuntime(store, [TENANT], "", lambda: int(clock.now() * 1000), grace_ms=0,
                                    step_seconds=0.02, sender_for=lambda tenant, metrics: sender)
            url = await runtime.start()
            channel = Channel(TENANT.id, TENANT.channel_access_token, TENANT.channel_secret,
                              webhook_url=f"{url}/webhook/{TENANT.id}")
            try:
                async with run_linesim(Config([channel], clock=clock)) as sim:
                    sender.base_url = sim.base_url
                    result = await test(Town(sim, runtime, clock), store)
                    refused = [(e, s) for e, s in sim.state.requests if s != 200]
                    assert refused == [], refused
                    return result
            finally:
                await runtime.close()
        return asyncio.run(go())
    return run


def test_a_new_friend_signs_up_by_buttons_invites_family_and_the_family_is_told(tmp_path):
    alice, son = user_id_for("alice"), user_id_for("alices-son")

    async def story(t: Town, store: Store):
        welcome = await t.follow(alice)
        assert "友だち追加ありがとうございます" in texts(welcome)
        assert t.seen(alice)[-1].endpoint == "reply"  # answers to her own action are free replies
        # the token was used, and claimed: never again (a reply has no retry key)
        welcomed = [i for (i,) in store.db.execute("SELECT id FROM effects WHERE reply IS NOT NULL")]
        assert welcomed and store.claim_replies(TENANT.id, welcomed) == set()
        assert dict(store.states(TENANT.id)) == {}  # nothing is kept about her before she confirms

        interval_q = await t.tap(alice, "安否通知", welcome)
        assert "どのくらいの間隔" in texts(interval_q)
        time_q = await t.tap(alice, "毎日", interval_q)
        card = await t.tap(alice, "午前9時", time_q)
        assert "お送りする日時：毎日 午前9時" in texts(card) and "安否通知" in texts(card)
        assert "個人情報の取り扱い" in texts(card) and "退会すると、すべて消します" in texts(card)   # read first
        done = await t.tap(alice, "登録する", card)
        assert "毎日 午前9時ごろに「お元気ですか？」とお送りします" in texts(done)
        state = dict(store.states(TENANT.id))[alice]
        assert (state.settings.service, state.settings.schedule.interval, state.settings.schedule.minute) == \
            ("notify", "1d", 9 * 60)

        invite = await t.tap(alice, "家族を招待する", done)
        shared = unquote(button(invite, "招待を送る")["uri"].split("text=", 1)[1])
        code_line = re.search(r"^招待 \S+$", shared, re.M).group(0)

        await t.follow(son)
        added = await t.say(son, code_line)
        assert "連絡先に登録しました" in texts(added)
        assert dict(store.states(TENANT.id))[alice].settings.contacts == (son,)
        again = await t.say(son, code_line)
        assert "この招待は使えませんでした" in texts(again)  # one use only
        assert son not in dict(store.states(TENANT.id))  # the son did not sign up himself

        # the morning's check goes unanswered: resent a day later, and three hours on the son is told
        await t.at(START + 9 * HOUR)
        assert "お元気ですか？" in texts(t.seen(alice)[-1].messages)
        await t.at(START + DAY + 9 * HOUR)
        assert "お返事がまだです" in texts(t.seen(alice)[-1].messages)
        told_before = len(t.seen(son))
        await t.at(START + DAY + 12 * HOUR)
        assert len(t.seen(son)) == told_before + 1
        notice = t.seen(son)[-1]
        assert "お返事がありません" in texts(notice.messages) and notice.endpoint == "push"
        going = await t.tap(son, "見に行きます", notice.messages)
        assert "よろしくお願いいたします" in texts(going)
        case = readside.cases(store.db, TENANT.id, "contacts_notified", "open")[0]
        assert readside.acknowledged(store.db, TENANT.id, alice, case["cycle"]) == [t.clock.now_ms()]
        return [d.endpoint for d in t.seen(alice)]

    endpoints = town(story)(tmp_path)
    assert endpoints[:6] == ["reply"] * 6  # welcome, three questions, enrolled, invitation: all free


def test_the_watch_service_asks_for_a_phone_number_and_keeps_only_that_services(tmp_path):
    grandpa, neighbour = user_id_for("grandpa"), user_id_for("neighbour")

    async def story(t: Town, store: Store):
        welcome = await t.follow(grandpa)
        interval_q = await t.tap(grandpa, "見守り", welcome)
        weekday_q = await t.tap(grandpa, "毎週", interval_q)
        assert "何曜日" in texts(weekday_q)
        time_q = await t.tap(grandpa, "月曜日", weekday_q)
        card = await t.tap(grandpa, "午後2時", time_q)
        assert "毎週 月曜日 午後2時" in texts(card)
        done = await t.tap(grandpa, "登録する", card)
        assert "お電話番号を、数字で送ってください" in texts(done)
        saved = await t.say(grandpa, "０９０－１２３４－５６７８")  # as a phone keyboard may type it
        assert "お電話番号を登録しました" in texts(saved)
        settings = dict(store.states(TENANT.id))[grandpa].settings
        assert (settings.schedule.interval, settings.schedule.weekday, settings.phone) == ("weekly", 0, "09012345678")

        # someone on 安否通知 who types a number: it is not stored anywhere in the state
        welcome = await t.follow(neighbour)
        card = await t.tap(neighbour, "午前7時", await t.tap(neighbour, "3日に1回",
                                                              await t.tap(neighbour, "安否通知", welcome)))
        await t.tap(neighbour, "登録する", card)
        before = len(t.seen(neighbour))
        token = t.sim.state.issue_reply_token(TENANT.id, user_source(neighbour))
        await t.sim.state.crowd.post(TENANT.id, [message_event(user_source(neighbour), "09011112222",
                                                               reply_token=token, timestamp=t.clock.now_ms())])
        await t.until(lambda: t.runtime.towns[TENANT.id].engine.inbox >= store.db.execute(
            "SELECT MAX(seq) FROM inbox").fetchone()[0], "the engine to apply the message")
        await asyncio.sleep(0.2)
        assert len(t.seen(neighbour)) == before  # no answer: nothing was saved
        assert dict(store.states(TENANT.id))[neighbour].settings.phone is None
        # the inbox keeps no phone number once applied (the state has it), sealed or not
        assert store.db.execute("SELECT COUNT(*) FROM inbox WHERE json_extract(event, '$.type') = 'phone' OR "
                                "json_extract(event, '$.settings.phone') IS NOT NULL").fetchone() == (0,)
        # in the store's files (the states, the inbox, the effects, the registry) nothing is in clear
        found = on_disk(tmp_path, ["09012345678", "０９０－１２３４－５６７８", "09011112222", TENANT.channel_secret,
                                   TENANT.channel_access_token])
        assert found == {}, found

    town(story)(tmp_path)


def on_disk(folder, needles: list[str]) -> dict:
    """Which of `needles` lie in clear (UTF-8) in which files of `folder`."""
    found = {}
    for path in sorted(folder.iterdir()):
        if path.is_file():
            data = path.read_bytes()
            hits = [n for n in needles if n.encode() in data]
            if hits:
                found[path.name] = hits
    return found


def test_a_group_that_invites_the_account_gets_the_how_to_the_card_and_the_list_of_who_is_missing(tmp_path):
    group = group_id_for("mutual-aid")
    a, b, c = (user_id_for(f"group-{x}") for x in "abc")

    async def story(t: Town, store: Store):
        hello = await t.send(group_source(group), lambda **kw: join_event(group, **kw))
        assert "このグループで「つながり」を始めます" in texts(hello) and "毎日 午前9時" in texts(hello)
        assert t.seen(group)[-1].endpoint == "reply"
        token = t.sim.state.issue_reply_token(TENANT.id, group_source(group))
        assert await t.sim.state.crowd.post(TENANT.id, [member_joined_event(
            group, [a, b, c], reply_token=token, timestamp=t.clock.now_ms())]) == 200

        await t.at(START + 9 * HOUR)
        card = t.seen(group)[-1]
        assert card.endpoint == "push" and "みなさん、お元気ですか？" in texts(card.messages)
        ok = button(card.messages, "元気です")["data"]
        token = t.sim.state.issue_reply_token(TENANT.id, group_source(group, a))
        await t.sim.state.crowd.post(TENANT.id, [postback_event(group_source(group, a), ok, reply_token=token,
                                                                timestamp=t.clock.now_ms())])
        await t.at(START + 9 * HOUR + 23 * HOUR)
        missing = t.seen(group)[-1].messages[0]
        assert missing["type"] == "textV2"
        mentioned = {s["mentionee"]["userId"] for s in missing["substitution"].values()}
        assert mentioned == {b, c}

    town(story)(tmp_path)


def test_the_my_page_button_in_line_opens_the_residents_own_page(tmp_path):
    resident = user_id_for("my-page")

    async def story(t: Town, store: Store):
        card = await t.tap(resident, "午前9時", await t.tap(resident, "毎日", await t.tap(
            resident, "安否通知", await t.follow(resident))))
        await t.tap(resident, "登録する", card)
        t.clock.advance(2)
        link = await t.send(user_source(resident), lambda **kw: postback_event(user_source(resident),
                                                                               "action=mypage", **kw))
        uri = button(link, "マイページを開く")["uri"]
        assert uri.startswith(f"{t.runtime.url}/mypage/{TENANT.id}?t=")
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # an IP host
            async with http.get(uri) as page:  # the signed link starts a session, then shows the page
                assert page.status == 200 and "いまの設定" in await page.text()
                assert "安否通知・毎日 午前9時" in await page.text()
            async with http.get(uri.replace("?t=", "?t=x")) as forged:
                assert forged.status == 403

    town(story)(tmp_path)


@pytest.mark.parametrize("text, number", [("09012345678", "09012345678"), ("03-1234-5678", "0312345678"),
                                          ("０９０ １２３４ ５６７８", "09012345678"), ("+81 90-1234-5678", "09012345678"),
                                          ("元気です", None), ("1234", None), ("090123456789012", None)])
def test_phone_numbers_are_read_the_way_people_type_them(text, number):
    from streams.line.webhook_events import phone_number
    assert phone_number(text) == number


def test_a_rollcall_reaches_its_area_by_multicast_and_each_answer_is_heard(tmp_path):
    """A roll-call in the inbox (as the 気象庁 feed or staff will put it): the card goes to the area's
    residents in one multicast, 「無事です」 is thanked, 「助けが必要」 tells the family at once."""
    from schemas.events import Register, RollCall
    from schemas.settings import NOTIFY, MemberSettings, Schedule
    kita = [user_id_for(f"kita-{i}") for i in range(3)]
    minami, family = user_id_for("minami-0"), user_id_for("kita-2-family")

    async def story(t: Town, store: Store):
        now = int(t.clock.now() * 1000)
        for uid, area in [*((u, "kita") for u in kita), (minami, "minami")]:
            contacts = (family,) if uid == kita[2] else ()
            settings = MemberSettings(uid, NOTIFY, Schedule("1d", 9 * 60, "Asia/Tokyo"), None, contacts, area)
            assert store.accept(TENANT.id, None, [(uid, Register(now, settings))])
        assert store.accept(TENANT.id, None, [("", RollCall(now + 60_000, "jma-20261201003000", ("kita",)))])
        await t.at(START + 120)
        await t.until(lambda: all(t.seen(u) for u in kita), "the roll-call cards")
        cards = [d for u in kita for d in t.seen(u)]
        assert {d.endpoint for d in cards} == {"multicast"} and len({d.request_id for d in cards}) == 1
        assert t.seen(minami) == []  # another area: no card
        card = cards[0].messages
        assert "ご無事ですか？" in texts(card)

        assert "ご無事で安心しました" in texts(await t.tap(kita[0], "無事です", card))
        told = await t.tap(kita[2], "助けが必要", card)
        assert "連絡先の方に知らせました" in texts(told)
        await t.until(lambda: t.seen(family), "the family's notice")
        assert button(t.seen(family)[0].messages, "見に行きます")["data"].startswith("action=ack")
        await t.at(START + 120 + 31 * 60)  # 30 minutes on: the one who has not answered is asked again
        await t.until(lambda: len(t.seen(kita[1])) == 2, "the resend")
        assert "まだお返事がありません" in texts(t.seen(kita[1])[1].messages)
        assert len(t.seen(kita[0])) == 2  # the card and the thanks: no resend to who answered
        effects = [e.effect for e in store.effects(TENANT.id) if e.subject == kita[1]]
        assert effects == ["rollcall_sent", "rollcall_resent"]

    town(story)(tmp_path)


def test_where_the_town_has_areas_sign_up_asks_which_one_and_the_resident_is_in_its_roll_calls(tmp_path):
    from streams.tenants import settings as ts
    from streams.tenants.in_sqlite import SqliteRegistry
    alice = user_id_for("alice-with-an-area")

    async def story(t: Town, store: Store):
        registry = SqliteRegistry(store)
        await registry.save(TENANT.id, None, settings=ts.merged(await registry.settings(TENANT.id), 0,
                                                                quake=ts.quake_config("kita,北町\nminami,南町\n")))
        await t.runtime.settings_changed(TENANT.id)   # as the 設定 page tells the running service
        welcome = await t.follow(alice)
        time_q = await t.tap(alice, "毎日", await t.tap(alice, "安否通知", welcome))
        area_q = await t.tap(alice, "午前9時", time_q)
        assert "お住まいの地区を教えてください" in texts(area_q)
        assert [i["action"]["label"] for i in area_q[0]["quickReply"]["items"]] == ["北町", "南町", "選ばない"]
        card = await t.tap(alice, "南町", area_q)
        assert "お住まいの地区：南町" in texts(card) and "お送りする日時：毎日 午前9時" in texts(card)
        await t.tap(alice, "登録する", card)
        assert dict(store.states(TENANT.id))[alice].settings.area == "minami"

    town(story)(tmp_path)


def test_in_a_group_each_roll_call_answer_is_said_in_the_group_by_reply(tmp_path):
    """A tap is seen by no one else in a group: the group hears who is safe and who asked for help,
    each named by a mention, by the free reply; a 「無事です」 whose token has gone stale is not pushed
    (a push to a group is paid once per person in it)."""
    from schemas.events import RollCall
    group = group_id_for("rollcall-group")
    a, b, c = (user_id_for(f"rollcall-group-{x}") for x in "abc")

    async def story(t: Town, store: Store):
        await t.send(group_source(group), lambda **kw: join_event(group, **kw))
        token = t.sim.state.issue_reply_token(TENANT.id, group_source(group))
        assert await t.sim.state.crowd.post(TENANT.id, [member_joined_event(
            group, [a, b, c], reply_token=token, timestamp=t.clock.now_ms())]) == 200
        now = int(t.clock.now() * 1000)
        assert store.accept(TENANT.id, None, [("", RollCall(now + 60_000, "jma-1", None))])
        await t.at(START + 120)
        await t.until(lambda: "みなさん、ご無事ですか？" in texts(t.seen(group)[-1].messages), "the group's card")
        card = t.seen(group)[-1].messages

        def answer(who: str, label: str):
            source = group_source(group, who)
            return t.send(source, lambda **kw: postback_event(source, button(card, label)["data"], **kw))
        safe = await answer(a, "無事です")
        assert t.seen(group)[-1].endpoint == "reply"
        assert safe[0]["type"] == "textV2" and safe[0]["text"] == "{who}さんは、無事です。"
        assert safe[0]["substitution"]["who"]["mentionee"]["userId"] == a
        helped = await answer(b, "助けが必要")
        assert t.seen(group)[-1].endpoint == "reply" and helped[0]["substitution"]["who"]["mentionee"]["userId"] == b
        assert "{who}さんが、助けを求めています。" in helped[0]["text"] and "119番" in helped[0]["text"]
        before = len(t.seen(group))  # c's tap comes late, its token two minutes old: nothing pushed to all
        token = t.sim.state.issue_reply_token(TENANT.id, group_source(group, c))
        assert await t.sim.state.crowd.post(TENANT.id, [postback_event(
            group_source(group, c), button(card, "無事です")["data"], reply_token=token,
            timestamp=t.clock.now_ms() - 120_000)]) == 200
        await t.until(lambda: any(e.member == c for e in store.effects(TENANT.id)), "c's answer")
        await t.runtime.drain()
        await asyncio.sleep(0.3)
        assert len(t.seen(group)) == before
        said = [(e.effect, e.member) for e in store.effects(TENANT.id) if e.subject == group and e.member]
        assert said == [("group_rollcall_safe", a), ("group_rollcall_need_help", b), ("group_rollcall_safe", c)]

    town(story)(tmp_path)
