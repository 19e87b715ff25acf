"""What residents, contacts and groups read: effects to LINE message objects. Pure.

The message objects are plain dicts exactly as LINE's messaging-api.yml defines them (a push body's
`messages` items). Residents are often very old: short sentences, plain words, polite, one big button.

Nothing here names a resident unless it must (the contacts' notice): check cards are the same for
everyone on a given day, so the sender can send them to 500 people in one multicast call.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Callable, Mapping

from agents import on_call, prompts
from agents.blocks import MUTED_COLOR, button, card
from agents.blocks import text as _text
from agents.clock import zone as tz
from agents.member import CLOSED_BY_STAFF, ESCALATE_AFTER, RESEND_AFTER
from schemas import effects as fx
from schemas.effects import Effect
from schemas.events import AcceptInvite, Acknowledge, ContactNights, Enroll, GroupJoined, LeaveContact, NeedHelp, Safe

# what the ingress reads back from a tap (postback data); keep in step with it
OK_DATA = "action=ok"
ACK_ACTION = "ack"
HELP_ACTION = "help"
HELP_DATA = "action=help"              # the first tap: asks to confirm
HELP_SURE_DATA = "action=help&sure=1"  # the confirmation: calls someone

CHECK_TEXT = "お元気ですか？"
OK_LABEL = "元気です"
HELP_LABEL = "助けてほしい"
HELP_SURE_LABEL = "はい、助けてほしい"
HELP_NOT_LABEL = "いいえ、元気です"
HELP_ASK_TEXT = {fx.HELP_TO_STAFF: "担当の職員に、すぐ知らせます。\nよろしいですか？",
                 fx.HELP_TO_CONTACTS: "ご家族など、連絡先の方に、すぐ知らせます。\nよろしいですか？"}
HELP_SENT_TEXT = {
    fx.HELP_TO_STAFF: "担当の職員に知らせました。\n職員から、お電話するか、うかがいます。",
    fx.HELP_TO_CONTACTS: "ご家族など、連絡先の方に知らせました。\n様子を見に来てもらえるよう、お願いしています。",
    fx.HELP_TO_BOTH: "ご家族など連絡先の方と、担当の職員に知らせました。\nだれかが、連絡するか、うかがいます。",
}
EMERGENCY_NOTE = "急ぐときは、119番に電話してください。"
ACK_LABEL = "見に行きます"
THANKS_TEXT = "お返事ありがとうございます。今日もよい一日を。"
RESOLVED_TEXT = "お返事ありがとうございます。ご無事で安心しました。今日もよい一日を。"
CHECKED_BY_STAFF_TEXT = ("ご無事が確認できて、安心しました。\n"
                         "これからも「お元気ですか？」とお送りします。届いたら「元気です」を押してください。")
RESEND_NOTE = "昨日のお知らせへのお返事がまだです。お元気でしたら、ボタンを押してください。"
CHECK_NOTE = "お元気でしたら、下の「元気です」を押してください。"
GROUP_CHECK_TEXT = "みなさん、お元気ですか？"
GROUP_NOTE = "お元気な方は、下の「元気です」を押してください。"
QUOTE_TITLE = "今日の名言"

# the roll-call after a disaster (agents/rollcall.py): one card for everyone, so it goes by multicast
SAFE_ACTION, NEED_HELP_ACTION = "safe", "need_help"
SAFE_DATA, NEED_HELP_DATA = f"action={SAFE_ACTION}", f"action={NEED_HELP_ACTION}"
SAFE_LABEL = "無事です"
NEED_HELP_LABEL = "助けが必要"
ROLLCALL_TEXT = "ご無事ですか？"
GROUP_ROLLCALL_TEXT = "みなさん、ご無事ですか？"
ROLLCALL_NOTE = "ご無事でしたら「無事です」を押してください。"
ROLLCALL_RESEND_NOTE = "まだお返事がありません。ご無事でしたら「無事です」を押してください。"
ROLLCALL_HELP_NOTE = "けがをした、動けないときは「助けが必要」を押してください。"
GROUP_ROLLCALL_NOTE = "ご無事な方は、おひとりずつ「無事です」を押してください。"
DRILL_MARK = "【訓練】"
DRILL_NOTE = "これは訓練です。"
ROLLCALL_SAFE_TEXT = "お返事ありがとうございます。ご無事で安心しました。"
DRILL_SAFE_TEXT = "訓練のお返事、ありがとうございました。"
DRILL_NEED_HELP_TEXT = ("訓練のお返事を受け取りました。本当のときは、担当の職員などにすぐ知らせます。\n"
                        "いま助けが必要なときは、119番に電話してください。")

# Proverbs (ことわざ): old, short, known to everyone, and free of anyone's copyright.
QUOTES = (
    "笑う門には福来たる",
    "千里の道も一歩から",
    "七転び八起き",
    "継続は力なり",
    "急がば回れ",
    "早起きは三文の徳",
    "塵も積もれば山となる",
    "石の上にも三年",
    "雨降って地固まる",
    "案ずるより産むが易し",
    "一期一会",
    "住めば都",
    "明日は明日の風が吹く",
    "病は気から",
    "情けは人のためならず",
    "果報は寝て待て",
)

# LINE's limits (messaging-api.yml and the API reference)
POSTBACK_DATA_MAX = 300
MENTIONS_PER_MESSAGE = 100   # textV2: at most 100 substitutions in one message
MESSAGES_PER_REQUEST = 5


@dataclass(frozen=True, slots=True)
class Texts:
    """A tenant's wording: its check question and its quotes. Defaults suit most municipalities."""
    check: str = CHECK_TEXT
    quotes: tuple[str, ...] = QUOTES
    names: Mapping[str, str] = field(default_factory=dict)  # userId -> display name, where known
    friend_url: str = ""   # the account's add-friend link (https://line.me/R/ti/p/@…), for invitations
    mypage: Callable[[str, int], str] | None = None  # (member, at) -> a signed My Page link (mypage_link)
    calls_url: str = ""    # the admin screen's call queue, which staff alerts link to ("": not served)
    long_intervals: bool = True   # sign-up offers schedules past the 8-day line (a tenant may forbid them)
    areas: tuple[tuple[str, str], ...] = ()   # the tenant's areas (id, name), which sign-up may offer
    privacy: str = prompts.PRIVACY_TEXT       # the tenant's privacy notice, shown before 「登録する」


def local_date(at_ms: int, zone: str) -> date:
    return datetime.fromtimestamp(at_ms / 1000, tz(zone)).date()


def quote_of_the_day(quotes: tuple[str, ...], day: date) -> str:
    """The same quote all day for everyone (so cards stay identical), a different one each day in turn."""
    return quotes[day.toordinal() % len(quotes)] if quotes else ""


# --- building blocks ------------------------------------------------------------------------------


def postback(label: str, data: str, display_text: str | None = None) -> dict:
    if len(data) > POSTBACK_DATA_MAX:
        raise ValueError(f"postback data longer than {POSTBACK_DATA_MAX} characters")
    action = {"type": "postback", "label": label, "data": data}
    if display_text:
        action["displayText"] = display_text  # shows in the chat as if the person had typed it
    return action


def _quote_block(quote: str) -> list[dict]:
    if not quote:
        return []
    return [{"type": "separator", "margin": "lg"},
            _text(QUOTE_TITLE, size="sm", color=MUTED_COLOR, margin="lg"),
            _text(quote, size="lg")]


# --- the messages ---------------------------------------------------------------------------------


def check_card(texts: Texts, day: date, *, resend: bool = False, group: bool = False) -> dict:
    """The 「お元気ですか？」 card: big question, a short note, today's quote, one big OK button, and
    under it a smaller 「助けてほしい」 (one person's card only: help is asked for oneself)."""
    question = GROUP_CHECK_TEXT if group and texts.check == CHECK_TEXT else texts.check
    note = GROUP_NOTE if group else (RESEND_NOTE if resend else CHECK_NOTE)
    body = [_text(question, size="xxl", weight="bold", align="center"), _text(note, size="lg")]
    body += _quote_block(quote_of_the_day(texts.quotes, day))
    buttons = [button(postback(OK_LABEL, OK_DATA, OK_LABEL))]
    if not group:
        buttons.append(help_button())
    return card(texts.check, body, buttons, spacing="lg" if not group else None)


def rollcall_card(effect: Effect) -> dict:
    """「ご無事ですか？」 after a disaster: two big buttons, 「無事です」 and 「助けが必要」, the same
    card for everyone in the roll-call (no name, no time), marked 【訓練】 in a drill."""
    drill = effect.data == fx.DRILL
    group = effect.effect == fx.GROUP_ROLLCALL_POSTED
    question = GROUP_ROLLCALL_TEXT if group else ROLLCALL_TEXT
    note = GROUP_ROLLCALL_NOTE if group else ROLLCALL_RESEND_NOTE if effect.effect == fx.ROLLCALL_RESENT else ROLLCALL_NOTE
    body = [_text(DRILL_MARK + DRILL_NOTE, size="md", weight="bold", color=MUTED_COLOR)] if drill else []
    body += [_text(question, size="xxl", weight="bold", align="center"), _text(note, size="lg"),
             _text(ROLLCALL_HELP_NOTE, size="md"), _text(EMERGENCY_NOTE, size="md", color=MUTED_COLOR)]
    return card((DRILL_MARK if drill else "") + question, body, [
        button(postback(SAFE_LABEL, SAFE_DATA, SAFE_LABEL)),
        button(postback(NEED_HELP_LABEL, NEED_HELP_DATA, NEED_HELP_LABEL), primary=False),
    ], spacing="lg")


def rollcall_answered(effect: Effect) -> list[dict]:
    """The answer to a 「無事です」; to a 「助けが必要」 only in a drill (for real, help_requested says
    whom we told)."""
    drill = effect.data == fx.DRILL
    if effect.effect == fx.ROLLCALL_SAFE:
        return [{"type": "text", "text": DRILL_SAFE_TEXT if drill else ROLLCALL_SAFE_TEXT}]
    return [{"type": "text", "text": DRILL_NEED_HELP_TEXT}] if drill else []


def group_rollcall_answered(effect: Effect) -> dict:
    """Into the group, under its roll-call card: who answered what (a tap is seen by no one else),
    the person named by a mention, as LINE shows them there."""
    drill = effect.data == fx.DRILL
    if effect.effect == fx.GROUP_ROLLCALL_SAFE:
        text = "{who}さんは、無事です。"
    elif drill:
        text = "{who}さんが「助けが必要」を押しました（訓練です）。"
    else:
        text = "{who}さんが、助けを求めています。\nお近くの方は、無理のない範囲で声をかけてください。\n" + EMERGENCY_NOTE
    return {"type": "textV2", "text": (DRILL_MARK if drill else "") + text,
            "substitution": {"who": {"type": "mention", "mentionee": {"type": "user", "userId": effect.member}}}}


def help_button() -> dict:
    return {**button(postback(HELP_LABEL, HELP_DATA, HELP_LABEL), primary=False), "height": "sm"}


def help_confirm(effect: Effect) -> dict:
    """Asked once, so that a slip of the finger sends nobody out."""
    ask = HELP_ASK_TEXT.get(effect.data or "", HELP_ASK_TEXT[fx.HELP_TO_STAFF])
    body = [_text(ask, size="xl", weight="bold"), _text(EMERGENCY_NOTE, size="md", color=MUTED_COLOR)]
    return card(ask.replace("\n", ""), body, [
        button(postback(HELP_SURE_LABEL, HELP_SURE_DATA, HELP_SURE_LABEL)),
        button(postback(HELP_NOT_LABEL, OK_DATA, HELP_NOT_LABEL), primary=False),  # the same as 「元気です」
    ], spacing="lg")


def help_sent(effect: Effect) -> dict:
    told = HELP_SENT_TEXT.get(effect.data or "", HELP_SENT_TEXT[fx.HELP_TO_STAFF])
    return {"type": "text", "text": f"{told}\n{EMERGENCY_NOTE}"}


def shown_name(texts: Texts, member: str) -> str:
    """How the contacts' messages name a resident: the name they chose to show, else no name at all."""
    return f"{texts.names[member]}さん" if member in texts.names else "あなたを連絡先に選んだ方"


def all_clear(texts: Texts, effect: Effect) -> dict:
    """To the contacts told earlier: the resident answered. Only the name they chose to show."""
    who = shown_name(texts, effect.subject)
    said = f"{who}の無事を、担当の職員が確かめました。" if effect.data == CLOSED_BY_STAFF else f"{who}から応答がありました。"
    return {"type": "text", "text": f"{said}ご安心ください。\nお知らせへのご協力、ありがとうございました。"}


def ack_data(member: str, cycle: int | None) -> str:
    return f"action={ACK_ACTION}&member={member}&cycle={cycle}"


def _when(at_ms: int, zone: str) -> str:
    """「12月31日 午前9時」: the way people say it, not 09:00."""
    local = datetime.fromtimestamp(at_ms / 1000, tz(zone))
    half, hour = ("午前", local.hour) if local.hour < 12 else ("午後", local.hour - 12)
    minute = f"{local.minute}分" if local.minute else ""
    return f"{local.month}月{local.day}日 {half}{hour}時{minute}"


def contacts_notice(texts: Texts, effect: Effect, zone: str) -> dict:
    """To the people a resident chose: who has not answered since when (or asked for help when), and
    what we ask of them."""
    who = shown_name(texts, effect.subject)
    if fx.notice_reason(effect.data) == fx.HELP:
        head, when = f"{who}が、助けを求めています。", f"{_when(effect.at, zone)}に、ご本人から連絡がありました。"
    else:
        asked_at = effect.at - RESEND_AFTER - ESCALATE_AFTER  # when the unanswered check went out
        head, when = f"{who}から、お返事がありません。", f"{_when(asked_at, zone)}に「{texts.check}」とお送りしました。"
    lines = [
        _text("安否確認のお知らせ", size="sm", color=MUTED_COLOR),
        _text(head, size="xl", weight="bold"),
        _text(when, size="md"),
        _text("様子を見に行っていただけますか。見に行くときは「見に行きます」を押してください。", size="md"),
    ]
    alt = f"{head}様子を見に行っていただけますか。"
    return card(alt, lines, [button(postback(ACK_LABEL, ack_data(effect.subject, effect.cycle), ACK_LABEL))])


def thanks(effect: Effect) -> dict:
    if effect.effect != fx.RESOLVED_AFTER_ESCALATION:
        text = THANKS_TEXT
    elif effect.data == CLOSED_BY_STAFF:  # they did not answer in LINE: someone reached them another way
        text = CHECKED_BY_STAFF_TEXT
    else:
        text = RESOLVED_TEXT
    return {"type": "text", "text": text}


def unconfirmed_list(members: tuple[str, ...]) -> list[dict]:
    """The 23 h list in the group: each name is a mention (LINE shows the person's own display name).

    textV2 takes at most 100 mentions a message; a LINE group holds at most 500 people, so five
    messages (one request's worth) always fit.
    """
    out = []
    for start in range(0, len(members), MENTIONS_PER_MESSAGE):
        chunk = members[start:start + MENTIONS_PER_MESSAGE]
        keys = [f"member{start + i}" for i in range(len(chunk))]
        names = "\n".join("{" + k + "}" + "さん" for k in keys)
        head = "まだ「元気です」が押されていない方がいます。\n" if start == 0 else ""
        tail = "\nお近くの方は、声をかけてみてください。" if start + MENTIONS_PER_MESSAGE >= len(members) else ""
        out.append({
            "type": "textV2",
            "text": head + names + tail,
            "substitution": {k: {"type": "mention", "mentionee": {"type": "user", "userId": uid}}
                             for k, uid in zip(keys, chunk)},
        })
    return out[:MESSAGES_PER_REQUEST]


# --- staff alerts (agents/on_call.py says to whom) --------------------------------------------------

STAFF_ALERTS = frozenset({fx.STAFF_CALL, fx.STAFF_REMINDER})
STAFF_ALERT_REASONS = {fx.HELP: "ご本人が「助けてほしい」と送りました。", fx.NO_ANSWER: "確認にお返事がありません。",
                       fx.UNCLAIMED: "ご家族など連絡先の方が、3時間動けていません。",
                       fx.UNFOLLOWED_WATCH: "見守りの方がLINEをブロックしました。お電話で確かめてください。"}


def staff_alert(texts: Texts, effect: Effect) -> dict:
    """To the staff on duty: that a call waits, why, and where; never who (a LINE chat is no place
    for a resident's name or number: the call queue, behind the staff login, has them)."""
    if effect.effect == fx.STAFF_REMINDER:
        lines = [f"【安否確認】まだ誰も対応していない連絡があります（{effect.data}回目のお知らせ）。"]
    else:
        lines = ["【安否確認】職員の対応が必要です。", STAFF_ALERT_REASONS.get(effect.data or "", "")]
    if texts.calls_url:
        lines.append(f"{texts.calls_url}#{on_call.case_anchor(effect.subject, effect.cycle)}")
    else:
        lines.append("管理画面の「職員の連絡待ち」をご覧ください。")
    return {"type": "text", "text": "\n".join(line for line in lines if line)}


# --- effect -> (recipients, messages) -------------------------------------------------------------


def recipients(effect: Effect) -> tuple[str, ...]:
    if effect.effect in prompts.TO_MEMBER:
        return (effect.member,)
    if effect.effect == fx.CONTACTS_NOTIFIED or effect.effect == fx.ALL_CLEAR:
        return tuple(effect.to or ())
    if effect.effect == fx.GROUP_UNCONFIRMED and not effect.members:
        return ()
    return (effect.subject,)


def messages_for(effect: Effect, texts: Texts, zone: str) -> list[dict]:
    """The message objects an effect sends; [] for effects that are not LINE messages (staff_call, …)."""
    kind = effect.effect
    if kind in (fx.CHECK_SENT, fx.CHECK_RESENT, fx.GROUP_CHECK_POSTED):
        return [check_card(texts, local_date(effect.at, zone), resend=kind == fx.CHECK_RESENT,
                           group=kind == fx.GROUP_CHECK_POSTED)]
    if kind == fx.CONTACTS_NOTIFIED:
        return [contacts_notice(texts, effect, zone)]
    if kind == fx.ALL_CLEAR:
        return [all_clear(texts, effect)]
    if kind == fx.HELP_CONFIRM:
        return [help_confirm(effect)]
    if kind == fx.HELP_REQUESTED:
        return [help_sent(effect)]
    if kind in (fx.CONFIRMED, fx.RESOLVED_AFTER_ESCALATION):
        return [thanks(effect)]
    if kind == fx.GROUP_UNCONFIRMED:
        return unconfirmed_list(effect.members or ())
    if kind in ROLLCALL_CARDS:
        return [rollcall_card(effect)]
    if kind == fx.ROLLCALL_SAFE or kind == fx.ROLLCALL_NEED_HELP:
        return rollcall_answered(effect)
    if kind in GROUP_ROLLCALL_ANSWERS:
        return [group_rollcall_answered(effect)]
    return prompts.messages(effect, texts.friend_url, texts.mypage, texts.long_intervals, texts.areas, texts.privacy)


ROLLCALL_CARDS = frozenset({fx.ROLLCALL_SENT, fx.ROLLCALL_RESENT, fx.GROUP_ROLLCALL_POSTED})
GROUP_ROLLCALL_ANSWERS = frozenset({fx.GROUP_ROLLCALL_SAFE, fx.GROUP_ROLLCALL_NEED_HELP})
SENDS_MESSAGES = frozenset({fx.CHECK_SENT, fx.CHECK_RESENT, fx.CONTACTS_NOTIFIED, fx.CONFIRMED,
                            fx.RESOLVED_AFTER_ESCALATION, fx.GROUP_CHECK_POSTED, fx.GROUP_UNCONFIRMED,
                            fx.ALL_CLEAR, fx.HELP_CONFIRM, fx.HELP_REQUESTED, fx.ROLLCALL_SAFE,
                            fx.ROLLCALL_NEED_HELP}) | ROLLCALL_CARDS | GROUP_ROLLCALL_ANSWERS | prompts.KINDS
# answers to someone's own tap or message: a reply token of theirs may be at hand (free to answer with)
REPLYABLE = frozenset({fx.CONFIRMED, fx.RESOLVED_AFTER_ESCALATION, fx.HELP_CONFIRM, fx.HELP_REQUESTED,
                       fx.ROLLCALL_SAFE, fx.ROLLCALL_NEED_HELP}) | GROUP_ROLLCALL_ANSWERS | prompts.KINDS
# said in a group only while the tap's reply token is fresh: a push to a group is paid once per
# person in it, too dear for every 「無事です」 (a 「助けが必要」 is worth it)
REPLY_ONLY = frozenset({fx.GROUP_ROLLCALL_SAFE})


def answers(event) -> str | None:
    """Whose own action an inbound event is, for the reply token that came with it (see reply_holder)."""
    kind = type(event)
    if kind is AcceptInvite or kind is Acknowledge or kind is LeaveContact or kind is ContactNights:
        return event.contact
    if kind is GroupJoined:
        return event.group
    if kind is Enroll:
        return event.settings.id
    if getattr(event, "group", None) is not None:
        # a tap in a group: its token answers into the group, which hears a roll-call's answers only
        return event.group if kind is Safe or kind is NeedHelp else None
    return getattr(event, "member", None)


def reply_holder(effect: Effect) -> str | None:
    """Whose reply token answers this effect: the one it goes to, if it answers their own action."""
    if effect.effect not in REPLYABLE:
        return None
    return effect.member if effect.effect in prompts.TO_MEMBER else effect.subject
