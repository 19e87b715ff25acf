"""Message texts and the pure outbound rules: what LINE gets must be what messaging-api.yml allows."""
import random
import re
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from agents import messages as m
from agents import mypage_link
from agents import outbound as ob
from linesim.spec import request_validator
from schemas import effects as fx
from schemas.effects import Effect

JST = ZoneInfo("Asia/Tokyo")
AT = int(datetime(2026, 12, 1, 9, 0, tzinfo=JST).timestamp() * 1000)
TEXTS = m.Texts(names={"U001": "山田 花子"},
                mypage=mypage_link.linker("https://anpi.example.jp", "town", "channel-secret"))
PUSH = request_validator("post", "/v2/bot/message/push")
MULTICAST = request_validator("post", "/v2/bot/message/multicast")
REPLY = request_validator("post", "/v2/bot/message/reply")
JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")

ROLLCALL_EFFECTS = [
    *(Effect(AT, kind, subject, data=drill, rollcall="jma-20261201233600")
      for kind, subject in ((fx.ROLLCALL_SENT, "U001"), (fx.ROLLCALL_RESENT, "U001"), (fx.GROUP_ROLLCALL_POSTED, "C001"),
                            (fx.ROLLCALL_SAFE, "U001"))
      for drill in (None, fx.DRILL)),
    Effect(AT, fx.ROLLCALL_NEED_HELP, "U001", data=fx.DRILL, rollcall="drill-1"),
]
EFFECTS = [
    Effect(AT, fx.CHECK_SENT, "U001", 1),
    Effect(AT + 24 * 3600_000, fx.CHECK_RESENT, "U001", 1),
    Effect(AT + 27 * 3600_000, fx.CONTACTS_NOTIFIED, "U001", 1, ("U900", "U901")),
    Effect(AT + 27 * 3600_000, fx.CONTACTS_NOTIFIED, "U002", 4, ("U900",)),   # no name known
    Effect(AT + 3600_000, fx.CONFIRMED, "U001", 1),
    Effect(AT + 30 * 3600_000, fx.RESOLVED_AFTER_ESCALATION, "U001", 1),
    Effect(AT, fx.GROUP_CHECK_POSTED, "C001", 1),
    Effect(AT + 23 * 3600_000, fx.GROUP_UNCONFIRMED, "C001", 1, members=("U010", "U011")),
    # the conversations
    Effect(AT, fx.WELCOME, "U001"),
    *(Effect(AT, fx.SETUP_PROMPT, "U001", data=d) for d in ("", "s=watch", "s=notify&i=weekly",
                                                            "s=notify&i=biweekly&w=sun", "s=watch&i=1d&t=540",
                                                            "s=notify&i=30d&t=1230")),
    Effect(AT, fx.ENROLLED, "U001", data="s=notify&i=1d&t=540"),
    Effect(AT, fx.ENROLLED, "U001", data="s=watch&i=weekly&w=mon&t=840&need=phone"),
    Effect(AT, fx.PHONE_SAVED, "U001"),
    Effect(AT, fx.INVITE_CREATED, "U001", data="VTAwMQ.abcdefghijkl"),
    Effect(AT, fx.CONTACT_ADDED, "U001", member="U900"),
    Effect(AT, fx.LEFT_AS_CONTACT, "U001", member="U900"),
    Effect(AT, fx.CONTACT_LEFT, "U001", member="U900"),
    Effect(AT, fx.INVITE_REFUSED, "U001", member="U900"),
    Effect(AT, fx.GROUP_WELCOME, "C001", data="i=1d&t=540"),
    Effect(AT + 30 * 3600_000, fx.RESOLVED_AFTER_ESCALATION, "U001", 1, data="staff"),
    Effect(AT, fx.MYPAGE_LINK, "U001"),
    Effect(AT, fx.CONTACT_ACKNOWLEDGED, "U001", 1, member="U900"),
    Effect(AT, fx.ACK_NOT_NEEDED, "U001", 1, member="U900"),
    # nobody is left waiting
    Effect(AT, fx.ALL_CLEAR, "U001", 1, to=("U900", "U901")),
    Effect(AT, fx.ALL_CLEAR, "U002", 1, to=("U900",)),   # no name known
    Effect(AT, fx.ALL_CLEAR, "U001", 1, to=("U900",), data="staff"),
    *(Effect(AT, fx.HELP_CONFIRM, "U001", data=d) for d in (fx.HELP_TO_STAFF, fx.HELP_TO_CONTACTS)),
    *(Effect(AT, fx.HELP_REQUESTED, "U001", 2, data=d) for d in (fx.HELP_TO_STAFF, fx.HELP_TO_CONTACTS,
                                                                  fx.HELP_TO_BOTH)),
    *ROLLCALL_EFFECTS,
]


def _texts(node):
    """Every string a person reads: text fields, labels, altText, displayText."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("text", "label", "altText", "displayText") and isinstance(v, str):
                yield v
            else:
                yield from _texts(v)
    elif isinstance(node, list):
        for x in node:
            yield from _texts(x)


def _actions(node):
    if isinstance(node, dict):
        if node.get("type") == "postback":
            yield node
        for v in node.values():
            yield from _actions(v)
    elif isinstance(node, list):
        for x in node:
            yield from _actions(x)


@pytest.mark.parametrize("effect", EFFECTS, ids=lambda e: f"{e.effect}-{e.data}")
def test_every_message_is_a_valid_push_body_in_kind_japanese(effect):
    messages = m.messages_for(effect, TEXTS, "Asia/Tokyo")
    assert 1 <= len(messages) <= 5
    for message in messages:  # LINE's caps on quick replies
        items = message.get("quickReply", {}).get("items", [])
        assert len(items) <= 13 and all(len(i["action"]["label"]) <= 20 for i in items)
    for to in m.recipients(effect):
        PUSH.validate({"to": to, "messages": messages})
    REPLY.validate({"replyToken": "x" * 32, "messages": messages})
    for text in _texts(messages):
        assert JAPANESE.search(text.replace("{", "").replace("}", "")), text
    for message in messages:
        assert len(message.get("altText", "")) <= 400
    for action in _actions(messages):
        assert len(action["data"]) <= 300


def test_no_message_for_what_is_not_a_line_message():
    for kind in (fx.STAFF_CALL, fx.STAFF_REMINDER, fx.GROUP_CONFIRMED, fx.UNFOLLOWED, fx.FOLLOWED):
        assert m.messages_for(Effect(AT, kind, "U001", 1), TEXTS, "Asia/Tokyo") == []
    # a real 「助けが必要」 is answered by its help_requested (whom we told), not twice
    assert m.messages_for(Effect(AT, fx.ROLLCALL_NEED_HELP, "U001", rollcall="R1"), TEXTS, "Asia/Tokyo") == []


def test_the_check_card_has_one_big_ok_button_and_a_smaller_help_that_the_ingress_understands():
    for kind in (fx.CHECK_SENT, fx.CHECK_RESENT, fx.GROUP_CHECK_POSTED):
        [card] = m.messages_for(Effect(AT, kind, "U001", 1), TEXTS, "Asia/Tokyo")
        assert card["type"] == "flex" and card["altText"] == "お元気ですか？"
        ok, *help_ = list(_actions(card))
        assert ok == {"type": "postback", "label": "元気です", "data": "action=ok", "displayText": "元気です"}
        big, *small = card["contents"]["footer"]["contents"]
        assert big["style"] == "primary" and big["height"] == "md"
        if kind == fx.GROUP_CHECK_POSTED:  # help is asked for oneself, not in a group
            assert help_ == [] and small == []
        else:
            assert [a["data"] for a in help_] == ["action=help"] and help_[0]["label"] == "助けてほしい"
            assert small[0]["style"] == "secondary" and small[0]["height"] == "sm"
        texts = list(_texts(card))
        assert m.quote_of_the_day(m.QUOTES, date(2026, 12, 1)) in texts
    resend = m.messages_for(EFFECTS[1], TEXTS, "Asia/Tokyo")[0]
    assert "昨日のお知らせへのお返事がまだです。お元気でしたら、ボタンを押してください。" in _texts(resend)
    group = m.messages_for(EFFECTS[6], TEXTS, "Asia/Tokyo")[0]
    assert "みなさん、お元気ですか？" in _texts(group)


def test_the_rollcall_card_asks_if_you_are_safe_with_two_buttons_the_ingress_reads_back():
    from streams.line.webhook_events import route
    from schemas.events import NeedHelp, Safe
    cards = {}
    for effect in ROLLCALL_EFFECTS[:6]:
        [card] = m.messages_for(effect, TEXTS, "Asia/Tokyo")
        cards[effect.effect, effect.data] = card
        safe, need = list(_actions(card))
        assert (safe["label"], safe["data"], need["label"], need["data"]) == ("無事です", "action=safe",
                                                                             "助けが必要", "action=need_help")
        first, second = card["contents"]["footer"]["contents"]
        assert first["style"] == "primary" and second["style"] == "secondary" and second["height"] == "md"
        texts = list(_texts(card))
        assert ("【訓練】これは訓練です。" in texts) == (effect.data == fx.DRILL)
        assert card["altText"].endswith("ご無事ですか？") and "119番" in "".join(texts)
        assert "山田" not in "".join(texts)  # the same card for everyone: it goes by multicast
    assert "みなさん、ご無事ですか？" in _texts(cards[fx.GROUP_ROLLCALL_POSTED, None])
    assert any("まだお返事がありません" in t for t in _texts(cards[fx.ROLLCALL_RESENT, None]))
    # what a tap on each button becomes, one to one and in a group
    from linebot.v3.webhooks import Event
    for data, kind in (("action=safe", Safe), ("action=need_help", NeedHelp)):
        for source, group in (({"type": "user", "userId": "U" + "1" * 32}, None),
                              ({"type": "group", "groupId": "C" + "2" * 32, "userId": "U" + "1" * 32}, "C" + "2" * 32)):
            tap = Event.from_dict({"type": "postback", "mode": "active", "timestamp": AT, "source": source,
                                   "webhookEventId": "01" + "A" * 24, "deliveryContext": {"isRedelivery": False},
                                   "replyToken": "r", "postback": {"data": data}})
            assert route("t", [tap]).events == [kind(AT, "U" + "1" * 32, group)]
    thanks = m.messages_for(ROLLCALL_EFFECTS[6], TEXTS, "Asia/Tokyo")
    assert thanks == [{"type": "text", "text": "お返事ありがとうございます。ご無事で安心しました。"}]


def test_check_cards_carry_no_name_so_everyone_gets_the_same_card_that_day():
    a = m.messages_for(Effect(AT, fx.CHECK_SENT, "U001", 1), TEXTS, "Asia/Tokyo")
    b = m.messages_for(Effect(AT + 3600_000, fx.CHECK_SENT, "U777", 9), TEXTS, "Asia/Tokyo")
    assert a == b
    next_day = m.messages_for(Effect(AT + 24 * 3600_000, fx.CHECK_SENT, "U001", 2), TEXTS, "Asia/Tokyo")
    assert next_day != a  # a new quote every day


def test_quote_of_the_day_is_deterministic_and_walks_the_whole_list():
    days = [date(2026, 1, 1).toordinal() + i for i in range(len(m.QUOTES))]
    picked = [m.quote_of_the_day(m.QUOTES, date.fromordinal(d)) for d in days]
    assert sorted(picked) == sorted(m.QUOTES)
    assert m.quote_of_the_day(m.QUOTES, date(2026, 5, 5)) == m.quote_of_the_day(m.QUOTES, date(2026, 5, 5))
    # the tenant's date, not UTC's: 23:30 UTC on Nov 30 is Dec 1 in Tokyo
    late = int(datetime(2026, 11, 30, 23, 30, tzinfo=ZoneInfo("UTC")).timestamp() * 1000)
    assert m.local_date(late, "Asia/Tokyo") == date(2026, 12, 1)


def test_contacts_notice_says_who_since_when_and_what_to_do():
    [notice] = m.messages_for(EFFECTS[2], TEXTS, "Asia/Tokyo")
    texts = " ".join(_texts(notice))
    assert "山田 花子さん" in texts
    assert "12月1日 午前9時" in texts                 # the check went out 27 h before the notice
    assert "様子を見に行っていただけますか。見に行くときは「見に行きます」を押してください" in texts
    [action] = list(_actions(notice))
    assert action["data"] == "action=ack&member=U001&cycle=1" and action["label"] == "見に行きます"
    [anonymous] = m.messages_for(EFFECTS[3], TEXTS, "Asia/Tokyo")
    assert "U002" not in " ".join(_texts(anonymous))  # an id is not a name
    long_name = m.Texts(names={"U001": "花" * 1000})
    assert len(m.messages_for(EFFECTS[2], long_name, "Asia/Tokyo")[0]["altText"]) <= 400


def test_thanks():
    assert m.messages_for(EFFECTS[4], TEXTS, "Asia/Tokyo") == [
        {"type": "text", "text": "お返事ありがとうございます。今日もよい一日を。"}]


@pytest.mark.parametrize("size", [1, 99, 100, 101, 250, 500])
def test_unconfirmed_list_mentions_everyone_within_line_limits(size):
    members = tuple(f"U{i:032x}" for i in range(size))
    messages = m.unconfirmed_list(members)
    PUSH.validate({"to": "C001", "messages": messages})
    assert len(messages) == -(-size // 100) <= 5
    mentioned = []
    for msg in messages:
        keys = re.findall(r"\{(\w+)\}", msg["text"])
        assert keys == list(msg["substitution"]) and len(keys) <= 100
        mentioned += [msg["substitution"][k]["mentionee"]["userId"] for k in keys]
    assert mentioned == list(members)
    assert messages[0]["text"].startswith("まだ「元気です」が押されていない方がいます。")


# --- coalescing and retry keys --------------------------------------------------------------------


def _check_items(n, effect="check_sent"):
    card = tuple(m.messages_for(Effect(AT, fx.CHECK_SENT, "U0", 1), TEXTS, "Asia/Tokyo"))
    return [ob.Item(f"U{i:05d}", card, f"U{i:05d}:1:{effect}") for i in range(n)]


def test_1234_identical_checks_make_three_multicasts():
    requests = ob.coalesce(_check_items(1234), scope="demo-city")
    assert [r.endpoint for r in requests] == ["multicast"] * 3
    assert [len(r.body["to"]) for r in requests] == [500, 500, 234]
    assert len({to for r in requests for to in r.body["to"]}) == 1234
    for r in requests:
        MULTICAST.validate(r.body)


def test_coalescing_is_deterministic_whatever_the_order():
    items = _check_items(1234)
    shuffled = items[:]
    random.Random(7).shuffle(shuffled)
    a, b = ob.coalesce(items, scope="t"), ob.coalesce(shuffled, scope="t")
    assert a == b
    keys = [r.retry_key for r in a]
    assert len(set(keys)) == 3
    assert all(re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", k) for k in keys)
    assert [r.retry_key for r in ob.coalesce(items, scope="other-city")] != keys  # tenants never collide


def test_groups_and_lone_users_go_by_push_and_different_messages_apart():
    card = _check_items(1)[0].messages
    thanks = ({"type": "text", "text": m.THANKS_TEXT},)
    items = [ob.Item("C001", card, "C001:1:group_check_posted"), ob.Item("U1", card, "U1:1:check_sent"),
             ob.Item("U2", thanks, "U2:1:confirmed"), ob.Item("U3", thanks, "U3:1:confirmed")]
    requests = ob.coalesce(items)
    shapes = sorted((r.endpoint, tuple(r.recipients)) for r in requests)
    assert shapes == [("multicast", ("U2", "U3")), ("push", ("C001",)), ("push", ("U1",))]
    for r in requests:
        (MULTICAST if r.endpoint == "multicast" else PUSH).validate(r.body)


def test_one_person_twice_in_a_batch_is_never_listed_twice_in_one_multicast():
    card = _check_items(1)[0].messages
    items = [ob.Item("U1", card, "a"), ob.Item("U1", card, "b"), ob.Item("U2", card, "c"), ob.Item("U3", card, "d")]
    requests = ob.coalesce(items)
    assert sorted(tuple(r.recipients) for r in requests) == [("U1",), ("U1", "U2", "U3")]
    assert len({r.retry_key for r in requests}) == 2


def test_one_effect_to_several_contacts_gets_a_key_per_push():
    effect = EFFECTS[2]
    msgs = tuple(m.messages_for(effect, TEXTS, "Asia/Tokyo"))
    a, b = (ob.push_request(ob.Item(to, msgs, effect.id)) for to in effect.to)
    assert a.retry_key != b.retry_key
    assert ob.push_request(ob.Item("U900", msgs, effect.id)).retry_key == a.retry_key


def test_too_many_messages_for_one_call_is_refused():
    with pytest.raises(ValueError):
        ob.coalesce([ob.Item("U1", ({"type": "text", "text": "あ"},) * 6, "x")])


# --- token bucket (fake clock) ---------------------------------------------------------------------


def test_token_bucket_lets_a_burst_through_then_spaces_requests_at_the_rate():
    state = ob.bucket(rate=10, burst=2, now=100.0)
    waits = []
    for _ in range(5):
        state, wait = ob.take(state, 100.0)
        waits.append(wait)
    assert waits == pytest.approx([0, 0, 0.1, 0.2, 0.3])   # each caller reserves the next free turn
    state, wait = ob.take(state, 100.3)                     # the queue drains as time passes
    assert wait == pytest.approx(0.1)
    state, wait = ob.take(state, 200.0)                     # long idle: full again, but no more than burst
    assert wait == 0 and state.tokens == pytest.approx(1)


def test_token_bucket_never_exceeds_its_rate_over_any_window():
    state, t, sends = ob.bucket(rate=200, burst=20, now=0.0), 0.0, []
    rng = random.Random(1)
    for _ in range(2000):
        t += rng.random() * 0.004
        state, wait = ob.take(state, t)
        sends.append(t + wait)
    sends.sort()
    for i, start in enumerate(sends):
        in_window = sum(1 for s in sends[i:i + 260] if s < start + 1.0)
        assert in_window <= 200 + 20


def test_token_bucket_ignores_a_clock_that_steps_back():
    state = ob.bucket(rate=1, burst=1, now=10.0)
    state, _ = ob.take(state, 10.0)
    state, wait = ob.take(state, 5.0)
    assert wait == pytest.approx(1.0)


# --- retry policy ----------------------------------------------------------------------------------


def test_classify():
    assert ob.classify(200) == ob.OK
    assert ob.classify(409, "The retry key is already accepted") == ob.DUPLICATE
    assert ob.classify(429, "Too many requests") == ob.RETRY
    assert ob.classify(429, "You have reached your monthly limit.") == ob.GIVE_UP
    assert ob.classify(500) == ob.classify(503) == ob.classify(None) == ob.RETRY
    assert ob.classify(400) == ob.classify(401) == ob.classify(403) == ob.GIVE_UP


def test_backoff_grows_with_deterministic_jitter_and_a_cap():
    policy = ob.RetryPolicy(base=0.5, cap=8.0, attempts=10)
    waits = [ob.backoff(policy, a, "key") for a in range(1, 10)]
    assert waits == [ob.backoff(policy, a, "key") for a in range(1, 10)]
    assert waits != [ob.backoff(policy, a, "other") for a in range(1, 10)]
    for a, w in enumerate(waits, 1):
        ceiling = min(8.0, 0.5 * 2 ** (a - 1))
        assert ceiling / 2 <= w <= ceiling


def test_thanks_say_what_happened_the_resident_answering_or_staff_reaching_them():
    answered = m.messages_for(Effect(AT, fx.RESOLVED_AFTER_ESCALATION, "U001", 1), TEXTS, "Asia/Tokyo")
    by_staff = m.messages_for(Effect(AT, fx.RESOLVED_AFTER_ESCALATION, "U001", 1, data="staff"), TEXTS, "Asia/Tokyo")
    assert "お返事ありがとうございます" in answered[0]["text"]
    assert "お返事" not in by_staff[0]["text"] and "ご無事が確認できて" in by_staff[0]["text"]


def test_the_my_page_button_opens_a_signed_link_for_that_member_only():
    [card] = m.messages_for(Effect(AT, fx.MYPAGE_LINK, "U001"), TEXTS, "Asia/Tokyo")
    uri = card["contents"]["footer"]["contents"][0]["action"]["uri"]
    assert uri.startswith("https://anpi.example.jp/mypage/town?t=")
    token = uri.split("?t=", 1)[1]
    key = mypage_link.key_for("channel-secret")
    assert mypage_link.verify(key, token, "town", AT + mypage_link.VALID_FOR) == "U001"
    for tenant, now, problem in (("city", AT, "another tenant"), ("town", AT + mypage_link.VALID_FOR + 1, "expired")):
        with pytest.raises(mypage_link.BadLink, match=problem):
            mypage_link.verify(key, token, tenant, now)
    with pytest.raises(mypage_link.BadLink, match="forged"):
        mypage_link.verify(mypage_link.key_for("another-secret"), token, "town", AT)
    [plain] = m.messages_for(Effect(AT, fx.MYPAGE_LINK, "U001"), m.Texts(), "Asia/Tokyo")
    assert "まだご用意できていません" in plain["text"]  # where no My Page is served


def test_help_is_asked_once_and_its_two_answers_are_a_help_and_an_ok():
    from streams.line.webhook_events import postback_action
    [ask] = m.messages_for(Effect(AT, fx.HELP_CONFIRM, "U001", data=fx.HELP_TO_STAFF), TEXTS, "Asia/Tokyo")
    assert "担当の職員に、すぐ知らせます。" in "".join(_texts(ask)) and "119番" in "".join(_texts(ask))
    sure, not_ = list(_actions(ask))
    assert (sure["label"], sure["data"]) == ("はい、助けてほしい", "action=help&sure=1")
    assert (not_["label"], not_["data"]) == ("いいえ、元気です", "action=ok")   # the same as the OK button
    assert postback_action(sure["data"]) == "help"
    [family] = m.messages_for(Effect(AT, fx.HELP_CONFIRM, "U001", data=fx.HELP_TO_CONTACTS), TEXTS, "Asia/Tokyo")
    assert "ご家族など、連絡先の方に、すぐ知らせます。" in "".join(_texts(family))
    [told] = m.messages_for(Effect(AT, fx.HELP_REQUESTED, "U001", 1, data=fx.HELP_TO_STAFF), TEXTS, "Asia/Tokyo")
    assert told["text"].startswith("担当の職員に知らせました。") and m.reply_holder(
        Effect(AT, fx.HELP_REQUESTED, "U001", 1)) == "U001"


def test_the_all_clear_goes_to_the_contacts_told_with_only_the_name_the_resident_shows():
    effect = Effect(AT, fx.ALL_CLEAR, "U001", 1, to=("U900", "U901"))
    assert m.recipients(effect) == ("U900", "U901")
    [message] = m.messages_for(effect, TEXTS, "Asia/Tokyo")
    assert message["text"].startswith("山田 花子さんから応答がありました。")
    [unnamed] = m.messages_for(Effect(AT, fx.ALL_CLEAR, "U002", 1, to=("U900",)), TEXTS, "Asia/Tokyo")
    assert "U002" not in unnamed["text"] and unnamed["text"].startswith("あなたを連絡先に選んだ方から応答がありました。")
    [by_staff] = m.messages_for(Effect(AT, fx.ALL_CLEAR, "U001", 1, to=("U900",), data="staff"), TEXTS, "Asia/Tokyo")
    assert by_staff["text"].startswith("山田 花子さんの無事を、担当の職員が確かめました。")


def test_sign_up_warns_of_the_8_day_line_for_weekly_biweekly_and_30_day_schedules():
    from schemas.settings import past_the_eight_day_line
    assert [i for i in ("1d", "2d", "3d", "5d", "weekly", "biweekly", "30d") if past_the_eight_day_line(i)] == \
        ["weekly", "biweekly", "30d"]   # 5 days + 27 h is 6 days and 3 hours; 7 days + 27 h passes the line
    for data, warned in (("s=watch&i=weekly&w=mon&t=540", True), ("s=notify&i=30d&t=540", True),
                         ("s=watch&i=5d&t=540", False), ("s=notify&i=1d&t=540", False)):
        [card] = m.messages_for(Effect(AT, fx.SETUP_PROMPT, "U001", data=data), TEXTS, "Asia/Tokyo")
        said = "".join(_texts(card))
        assert ("8日以上、誰にも気づかれない可能性があります" in said) is warned, data


def test_sign_up_asks_the_area_only_where_the_towns_areas_fit_as_quick_replies():
    from agents import prompts, signup
    chosen = signup.Choices("notify", "1d", None, 540)
    few = [(f"a{i}", f"地区{i}") for i in range(12)]
    asked = prompts.question(chosen, areas=few)
    labels = [item["action"]["label"] for item in asked["quickReply"]["items"]]
    assert labels == [name for _, name in few] + ["選ばない"] and len(labels) == 13
    for item in asked["quickReply"]["items"]:
        assert len(item["action"]["data"]) <= 300
    many = few + [("a12", "地区12")]   # 13 and 「選ばない」 do not fit: chosen on My Page instead
    assert prompts.question(chosen, areas=many)["type"] == "flex"       # straight to the confirmation
    long_ids = [("x" * 40, "長い地区")]
    assert prompts.question(chosen, areas=long_ids)["quickReply"]["items"][0]["action"]["label"] == "長い地区"
    skipped = chosen.with_(area=signup.NO_AREA)
    assert signup.settings("U1", skipped, "Asia/Tokyo").area is None
    assert signup.settings("U1", chosen.with_(area="a3"), "Asia/Tokyo").area == "a3"
    assert signup.parse(signup.encode(chosen.with_(area="a3"))) == chosen.with_(area="a3")
    with pytest.raises(ValueError):
        signup.parse("s=notify&a=" + "x" * 41)


def test_answers_that_share_a_reply_token_go_in_one_reply_and_what_does_not_fit_by_push():
    text = {"type": "text", "text": "ありがとう"}
    items = [ob.Item("U1", (text,), "U1:r:R1:rollcall_safe", "tok-1"), ob.Item("U1", (text,), "U1:1:confirmed", "tok-1"),
             ob.Item("U2", (text,), "U2:1:confirmed", "tok-2"),
             *(ob.Item("U3", (text, text), f"U3:{i}", "tok-3") for i in range(3))]
    replies, overflow = ob.reply_requests(items)
    assert [(r.body["replyToken"], len(r.body["messages"]), r.effect_ids) for r, _ in replies] == [
        ("tok-1", 2, ("U1:r:R1:rollcall_safe", "U1:1:confirmed")), ("tok-2", 1, ("U2:1:confirmed",)),
        ("tok-3", 4, ("U3:0", "U3:1"))]
    assert all(r.endpoint == ob.REPLY and r.retry_key is None for r, _ in replies)
    for r, _ in replies:
        REPLY.validate(r.body)
    assert overflow == [ob.Item("U3", (text, text), "U3:2", None)]   # five messages at most: the rest by push


def test_a_help_request_tells_the_contacts_that_help_was_asked_for_not_that_no_answer_came():
    from streams.simulation import scenario, simulator
    town = {"start": "2026-12-01T00:00:00+09:00", "end": "2026-12-03T00:00:00+09:00",
            "members": [{"id": "U001", "interval": "1d", "time": "09:00", "service": "notify",
                         "contacts": ["U900"]}],
            "events": [{"at": "2026-12-01T09:05:00+09:00", "type": "ok", "member": "U001"},
                       {"at": "2026-12-01T14:20:00+09:00", "type": "help", "member": "U001"}]}
    [notice] = [e for e in simulator.run(scenario.parse(town)) if e.effect == fx.CONTACTS_NOTIFIED]
    assert fx.notice_reason(notice.data) == fx.HELP and not fx.notice_quiet(notice.data)
    [card] = m.messages_for(notice, TEXTS, "Asia/Tokyo")
    texts = " ".join(_texts(card))
    assert "山田 花子さんが、助けを求めています。" in texts and "12月1日 午後2時20分" in texts
    assert "お返事がありません" not in texts and card["altText"].startswith("山田 花子さんが、助けを求めています。")
    from streams.mypage.view import history_line  # and the resident's own history says why they were told
    assert history_line(notice) == "「助けてほしい」を受けて、ご家族など（1人）にお知らせしました"
    # the notice's other meaning, the contacts waiting for the morning, rides along unchanged
    assert fx.notice_quiet(fx.notice_data(fx.HELP, ("U900", "U901"))) == {"U900", "U901"}
    assert fx.notice_reason(fx.notice_data(fx.NO_ANSWER, ("U900",))) == fx.NO_ANSWER
    assert fx.notice_data(fx.NO_ANSWER, ()) is None and fx.notice_quiet(None) == frozenset()
