"""LINE webhook bodies -> engine events. Pure: bytes in, plain records out; no clock, no I/O.

Two steps, each with one job:

  parse(body)          the raw (already signature-checked) body -> LINE's event models (line-bot-sdk v3),
                       or `Malformed` with a one-line reason that never quotes the body (it may hold
                       message text)
  route(tenant, evs)   the models -> `Routed`: engine events for what the engine acts on, audit
                       records for everything else, and the reply tokens of the people who wrote

What the engine acts on (everything else is audited, never an error, so that a new LINE event type
or a postback of another feature can never make LINE's delivery fail; what names the wrong kind of
subject, such as an invitation code or a 「見に行きます」 for a group, is refused here, with its
reason in the audit, before it can reach a subject it does not fit):

  postback "action=ok" from a person      Ok(at, member, group if given in a group)
  postback "action=safe" (無事です)         Safe(at, member, group if given in a group): a roll-call's answer
  postback "action=need_help" (助けが必要)  NeedHelp(at, member, group if in a group): the same, and a help
  postback "action=ack" (見に行きます)      Acknowledge(at, member, contact, cycle), one-to-one only
  postback "action=help" (助けてほしい)    AskHelp (asks to confirm); with "sure=1" Help; one-to-one only
  postback "action=leave" (連絡先をやめる)  LeaveContact(at, member, contact), one-to-one only
  postback "action=withdraw" (退会する)     Withdraw(at, member): the resident is removed; one-to-one only
  postback "action=nights" (夜は知らせない)  ContactNights(at, member, contact, quiet), one-to-one only
  any message from a person               Message(at, member, group if written in a group)
    … in a one-to-one chat, also:           a phone number → Phone; 「招待 <code>」 → AcceptInvite;
                                          「退会」 → AskWithdraw (a card to confirm it);
                                          「職員 <code>」 → StaffCode, which the ingress checks
                                          against the staff accounts and turns into StaffLinked;
                                          「登録 <code>」 → ResidentCode, which it checks against the
                                          imported roster and turns into Enroll (or CodeRefused)
  follow / unfollow                       Follow / Unfollow
  postbacks of sign-up (one-to-one)       action=setup → Setup, action=enroll → Enroll,
                                          action=invite → Invite (agents/signup.py, agents/invitation.py),
                                          action=mypage → OpenMyPage
  join / leave (a group)                  GroupJoined (daily at 9:00 to start with) / GroupLeft
  memberJoined / memberLeft (a group)     Roster

`at` is the webhook event's own `timestamp` (when LINE saw the tap), not when it reached us: the
engine gives ties at a deadline to the resident, and a tap must not lose that because a webhook
was slow or redelivered. Events in `standby` mode belong to another channel's module: audited only.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from linebot.v3.webhooks import (DeliveryContext, Event, EventMode, FollowEvent, GroupSource, JoinEvent, LeaveEvent,
                                 MemberJoinedEvent, MemberLeftEvent, MessageContent, MessageEvent, PostbackContent,
                                 PostbackEvent, RoomSource, Source, TextMessageContent, UnfollowEvent, UserSource)
from pydantic.v1 import ValidationError

from agents import invitation, on_call, signup
from streams.residents import codes as resident_codes
from agents.messages import ACK_ACTION, HELP_ACTION, NEED_HELP_ACTION, SAFE_ACTION, answers
from agents.prompts import (ENROLL_ACTION, INVITE_ACTION, LEAVE_ACTION, MYPAGE_ACTION, NIGHTS_ACTION, SETUP_ACTION,
                            WITHDRAW_ACTION, WITHDRAW_WORDS)
from schemas.events import (AcceptInvite, Acknowledge, AskHelp, AskWithdraw, Withdraw, ContactNights, Enroll, Help, LeaveContact, Follow, GroupJoined, GroupLeft, Inbound, Invite, Message, NeedHelp, Ok,
                            OpenMyPage, Phone, Roster, Safe, Setup, Unfollow)
from schemas.settings import Schedule, past_the_eight_day_line

INT64 = 1 << 63
MODES = ("active", "standby")
_ACTION = re.compile(r"[A-Za-z0-9_.-]{1,32}")  # an action name of our own postbacks: safe to audit


class Malformed(ValueError):
    """The body is not a webhook body LINE would send; `str(error)` is the one-line reason."""


@dataclass(frozen=True, slots=True)
class StaffCode:
    """A staff link code sent from LINE: never stored as it is; the ingress (which can read the
    staff accounts) replaces it by the engine event StaffLinked before anything is stored."""
    at: int
    member: str
    code: str


@dataclass(frozen=True, slots=True)
class ResidentCode:
    """An imported resident's registration code (「登録 1234 5678」, streams/residents/codes.py): the
    ingress (which can read the pending roster) replaces it by Enroll, or CodeRefused, before
    anything is stored."""
    at: int
    member: str
    code: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """An event of a type the SDK does not model: only its envelope, enough to de-duplicate and audit."""
    type: str
    timestamp: int
    mode: str
    webhook_event_id: str
    redelivery: bool
    source_type: str | None


@dataclass(frozen=True, slots=True)
class Routed:
    """What one webhook body means. `reply_tokens`: member -> (token, timestamp of its event).

    Reply tokens are free to answer with but single-use and good for about a minute: the timestamp
    lets the sender judge whether one is still worth trying. One-to-one chats give a token here,
    and a group's roll-call answers (a token from a group event replies into the group, not to the
    member), keyed by the group.
    """
    events: list[Inbound] = field(default_factory=list)
    audit: list[dict] = field(default_factory=list)
    reply_tokens: dict[str, tuple[str, int]] = field(default_factory=dict)

    def reply_for(self, event) -> tuple[str, int] | None:
        """The reply token an answer to `event` may use: its holder's, if it came with this very
        event (of several taps of one person's in a body, the newest token is the one kept)."""
        reply = self.reply_tokens.get(answers(event))
        return reply if reply is not None and reply[1] == event.at else None


# --- parse ----------------------------------------------------------------------------------------


def parse(body: bytes) -> list:
    """The events of a webhook body, in body order: SDK models, or `Unknown` for types it lacks."""
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise Malformed(f"body is not JSON: {error.__class__.__name__} at position "
                        f"{getattr(error, 'pos', getattr(error, 'start', '?'))}") from None
    except RecursionError:  # Python's parser recurses per level: 10,000 levels are no webhook
        raise Malformed("body: JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise Malformed("body: expected a JSON object")
    try:  # JSON may escape half a UTF-16 pair ("\ud800"); no id or topic can carry that string
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise Malformed("body: a string holds an unpaired UTF-16 surrogate") from None
    except RecursionError:
        raise Malformed("body: JSON nested too deeply") from None
    # destination is the bot's own user id; it is checked for shape only (the tenant is in the URL)
    if not isinstance(obj.get("destination"), str):
        raise Malformed("destination: expected a string")
    events = obj.get("events")
    if not isinstance(events, list):
        raise Malformed("events: expected an array")
    try:
        return [_event(i, e) for i, e in enumerate(events)]
    except RecursionError:  # the SDK's models recurse per level too
        raise Malformed("events: nested too deeply") from None


def _event(i: int, obj) -> object:
    where = f"events[{i}]"
    problem = _envelope_problem(obj)
    if problem:
        raise Malformed(f"{where}{problem}")
    if Event.get_discriminator_value(obj) is None:
        source = obj.get("source")
        return Unknown(obj["type"], obj["timestamp"], obj["mode"], obj["webhookEventId"],
                       obj["deliveryContext"]["isRedelivery"], source["type"] if source else None)
    if obj["type"] == "postback":
        tap = _plain_postback(obj)
        if tap is not None:
            return tap
    try:
        if obj["type"] == "message" and _unknown_message_type(obj.get("message")):
            return _message_of_unknown_type(obj)
        return Event.from_dict(obj)
    except ValidationError as error:
        raise Malformed(f"{where} ({obj['type']} event): {_first_problem(error)}") from None
    except (ValueError, TypeError, KeyError, AttributeError):
        # the SDK's own lookups (an unknown source or mention type, a field of the wrong shape) say
        # so with the whole object in the message: name the place, never the content
        raise Malformed(f"{where}: a {obj['type']} event this server cannot read "
                        "(unknown source/content type or a field of the wrong shape)") from None


def _envelope_problem(obj) -> str | None:
    """What every event must carry for us to de-duplicate, time and audit it, whatever its type."""
    if not isinstance(obj, dict):
        return ": expected an object"
    if not isinstance(obj.get("type"), str):
        return ".type: expected a string"
    ts = obj.get("timestamp")
    if type(ts) is not int or not -INT64 <= ts < INT64:
        return ".timestamp: expected an integer (epoch ms, int64)"
    if obj.get("mode") not in MODES:
        return ".mode: expected 'active' or 'standby'"
    if not isinstance(obj.get("webhookEventId"), str):
        return ".webhookEventId: expected a string"
    context = obj.get("deliveryContext")
    if not isinstance(context, dict) or type(context.get("isRedelivery")) is not bool:
        return ".deliveryContext.isRedelivery: expected a boolean"
    source = obj.get("source")
    if source is not None and not (isinstance(source, dict) and isinstance(source.get("type"), str)):
        return ".source.type: expected a string"
    return None


_POSTBACK_FIELDS = frozenset(("type", "source", "timestamp", "mode", "webhookEventId", "deliveryContext",
                              "replyToken", "postback"))
_MODES = {mode.value: mode for mode in EventMode}


def _plain_postback(obj: dict) -> PostbackEvent | None:
    """A postback exactly as LINE sends a tap on our buttons, built without pydantic's validation
    (which costs about 0.1 ms an event, as much as the rest of the ingress): only when every field
    is of the one type the SDK accepts unchanged, from a user or a group; anything else is None
    and takes the SDK's path, with its errors. The envelope is already checked."""
    if not obj.keys() <= _POSTBACK_FIELDS or len(obj["deliveryContext"]) != 1:
        return None
    postback, source, token = obj.get("postback"), obj.get("source"), obj.get("replyToken")
    if type(postback) is not dict or postback.keys() != {"data"} or type(postback["data"]) is not str:
        return None
    if token is not None and type(token) is not str:
        return None
    if type(source) is not dict:
        return None
    user = source.get("userId")
    if user is not None and type(user) is not str:
        return None
    if source["type"] == "user" and source.keys() <= {"type", "userId"}:
        origin = UserSource.construct(type="user", user_id=user)
    elif source["type"] == "group" and source.keys() <= {"type", "groupId", "userId"} \
            and type(source.get("groupId")) is str:
        origin = GroupSource.construct(type="group", group_id=source["groupId"], user_id=user)
    else:
        return None
    return PostbackEvent.construct(
        type="postback", source=origin, timestamp=obj["timestamp"], mode=_MODES[obj["mode"]],
        webhook_event_id=obj["webhookEventId"],
        delivery_context=DeliveryContext.construct(is_redelivery=obj["deliveryContext"]["isRedelivery"]),
        reply_token=token, postback=PostbackContent.construct(data=postback["data"], params=None))


def _unknown_message_type(message) -> bool:
    return isinstance(message, dict) and isinstance(message.get("type"), str) \
        and MessageContent.get_discriminator_value(message) is None


def _message_of_unknown_type(obj: dict) -> MessageEvent:
    """A message of a type newer than the SDK is still a sign of life: keep its envelope, type and id."""
    source = obj.get("source")
    return MessageEvent(
        type="message", source=Source.from_dict(source) if source is not None else None,
        timestamp=obj["timestamp"], mode=obj["mode"], webhook_event_id=obj["webhookEventId"],
        delivery_context=DeliveryContext.from_dict(obj["deliveryContext"]), reply_token=obj.get("replyToken"),
        message=MessageContent.parse_obj(obj["message"]))


def _first_problem(error: ValidationError) -> str:
    """pydantic's first complaint as `field.path: what` (its messages name types, not values)."""
    first = error.errors()[0]
    return f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}"


# --- route ---------------------------------------------------------------------------------------

# the group schedule a group starts with when the account is invited into it (changed from the admin screen)
GROUP_START = (9 * 60, "1d")


def route(tenant: str, events: list, zone: str = "Asia/Tokyo", long_intervals: bool = True) -> Routed:
    """`zone`: the tenant's time zone, for the schedules people choose in LINE; `long_intervals`
    False: the tenant forbids schedules past the 8-day line (a tap on one asks the interval again)."""
    routed = Routed()
    for event in events:
        inbound, reason = _inbound(event, zone, long_intervals)
        if reason:  # not applied, or only in part (a refused code still is a sign of life)
            routed.audit.append(audit_record(tenant, event, reason))
        if not inbound:
            continue
        routed.events.extend(inbound)
        token = getattr(event, "reply_token", None)
        holder = _reply_holder(event, inbound)
        if token and holder:
            held = routed.reply_tokens.get(holder)
            if held is None or held[1] <= event.timestamp:  # the newest token is the one still alive
                routed.reply_tokens[holder] = (token, event.timestamp)
    return routed


def _reply_holder(event, inbound: list[Inbound]) -> str | None:
    """Whom a reply with this event's token reaches: the person in a one-to-one chat, or the group
    the account just joined. A token from someone's tap in a group answers into the group, so it is
    kept for the group only when the group is to hear the answer: a roll-call's (a postback is seen
    by no one else, and the group wants to know who is safe)."""
    source = event.source
    if isinstance(event, JoinEvent):
        return source.group_id if isinstance(source, GroupSource) else None
    if isinstance(source, (GroupSource, RoomSource)):
        in_group = isinstance(source, GroupSource) and any(type(e) is Safe or type(e) is NeedHelp for e in inbound)
        return source.group_id if in_group else None
    return getattr(source, "user_id", None)


def _inbound(event, zone: str, long_intervals: bool = True) -> tuple[list[Inbound], str]:
    """The engine events for one LINE event, or none and the reason it is only audited."""
    if isinstance(event, Unknown):
        return [], "unknown_type"
    if _mode(event) != "active":
        return [], "standby"  # another channel is in control: we must not act or reply
    at, source = event.timestamp, event.source
    group = source.group_id if isinstance(source, GroupSource) else None
    if isinstance(event, (JoinEvent, LeaveEvent, MemberJoinedEvent, MemberLeftEvent)):
        return _group_event(event, group, zone)
    if not isinstance(event, (PostbackEvent, MessageEvent, FollowEvent, UnfollowEvent)):
        return [], "not_applied"  # unsend / beacon / videoPlayComplete / ...
    member = getattr(source, "user_id", None)
    if not member:
        return [], "no_user"  # e.g. a group message from a client that hides its userId
    if not is_person(member):
        return [], "not_a_person"  # LINE's user ids start with U, its group ids with C
    if group is not None and not is_group(group):
        return [], "not_a_group"
    one_to_one = not isinstance(source, (GroupSource, RoomSource))
    if isinstance(event, PostbackEvent):
        return _postback(event, member, group, one_to_one, zone, long_intervals)
    if isinstance(event, MessageEvent):
        said = _text_of(event) if one_to_one else None
        typed, reason = _typed(at, member, said) if said else ([], "")
        return [Message(at, member, group), *typed], reason
    if not one_to_one:
        return [], "not_applied"  # follow / unfollow only come from one-to-one chats
    return [Follow(at, member) if isinstance(event, FollowEvent) else Unfollow(at, member)], ""


def _postback(event: PostbackEvent, member: str, group: str | None, one_to_one: bool,
              zone: str, long_intervals: bool = True) -> tuple[list[Inbound], str]:
    at, data = event.timestamp, event.postback.data
    action = postback_action(data)
    if action == "ok":
        return [Ok(at, member, group)], ""
    if action == SAFE_ACTION:
        return [Safe(at, member, group)], ""
    if action == NEED_HELP_ACTION:  # the card's own question: a second tap to confirm costs time in a disaster
        return [NeedHelp(at, member, group)], ""
    if action == ACK_ACTION and one_to_one:
        ack = _ack(data)
        if ack is None:
            return [], "postback"
        if not is_person(ack[0]):
            return [], "ack_not_for_a_person"  # only a person's case can be taken up, never a group's
        return [Acknowledge(at, ack[0], member, ack[1])], ""
    if action == LEAVE_ACTION and one_to_one:
        whose = parse_qs(data).get("member", [""])[-1]
        if not _ID.fullmatch(whose) or not is_person(whose):
            return [], "postback"
        return [LeaveContact(at, whose, member)], ""
    if action == NIGHTS_ACTION and one_to_one:
        query = parse_qs(data)
        whose, quiet = query.get("member", [""])[-1], query.get("quiet", [""])[-1]
        if not _ID.fullmatch(whose) or not is_person(whose) or quiet not in ("0", "1"):
            return [], "postback"
        return [ContactNights(at, whose, member, quiet == "1")], ""
    if action == WITHDRAW_ACTION and one_to_one:   # the confirm card's 「退会する」, or My Page's
        return [Withdraw(at, member)], ""
    if action == HELP_ACTION and one_to_one:
        sure = parse_qs(data).get("sure", [""])[-1] == "1"
        return [Help(at, member) if sure else AskHelp(at, member)], ""
    if action not in (SETUP_ACTION, ENROLL_ACTION, INVITE_ACTION, MYPAGE_ACTION) or not one_to_one:
        return [], "postback"  # e.g. action=ack (見に行きます): another feature's, not a sign of life here
    if action == INVITE_ACTION:
        return [Invite(at, member, invitation.make(member, event.webhook_event_id))], ""
    if action == MYPAGE_ACTION:
        return [OpenMyPage(at, member)], ""
    try:
        choices = signup.parse(data)
        if choices.interval is not None and not long_intervals and past_the_eight_day_line(choices.interval):
            # an old quick reply, or one made by hand: asked again, among the intervals offered
            return [Setup(at, member, signup.encode(choices.with_(interval=None)))], "interval_not_offered"
        if action == SETUP_ACTION:
            return [Setup(at, member, signup.encode(choices))], ""
        return [Enroll(at, signup.settings(member, choices, zone))], ""
    except ValueError:
        return [], "postback"  # data we never wrote (an old or forged button): nothing to act on


def _ack(data: str) -> tuple[str, int] | None:
    """(member, cycle) of a 「見に行きます」 button (agents/messages.ack_data), if it is well formed."""
    values = parse_qs(data)
    member, cycle = values.get("member", [""])[-1], values.get("cycle", [""])[-1]
    if not _ID.fullmatch(member) or not cycle.isdigit() or len(cycle) > 9:
        return None
    return member, int(cycle)


_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _text_of(event: MessageEvent) -> str | None:
    return event.message.text if isinstance(event.message, TextMessageContent) else None


def _typed(at: int, member: str, text: str) -> tuple[list[Inbound], str]:
    """What a one-to-one text means besides being a sign of life: a phone number, or an invitation
    sent back; and the audit reason when it is refused. The text goes no further than this function."""
    code = on_call.read(text)
    if code is not None:
        return [StaffCode(at, member, code)], ""
    code = resident_codes.read(text)
    if code is not None:
        return [ResidentCode(at, member, code)], ""
    if unicodedata.normalize("NFKC", text).strip().rstrip("。.!！") in WITHDRAW_WORDS:
        return [AskWithdraw(at, member)], ""
    invited = invitation.read(text)
    if invited is not None:
        inviter, code = invited
        if not is_person(inviter):
            return [], "invite_not_for_a_person"  # a code naming a group (or room): no such invitation
        return [AcceptInvite(at, inviter, member, code)], ""
    number = phone_number(text)
    return ([Phone(at, member, number)] if number else []), ""


def is_person(subject: str) -> bool:
    """A LINE user id (they start with U; groups' with C, rooms' with R)."""
    return subject.startswith("U")


def is_group(subject: str) -> bool:
    return subject.startswith("C")


_PHONE = re.compile(r"0\d{9,10}")
_PHONE_NOISE = re.compile(r"[\s\-‐－ー−()（）]")


def phone_number(text: str) -> str | None:
    """A Japanese phone number typed any common way (full-width digits, hyphens, spaces), as digits."""
    digits = _PHONE_NOISE.sub("", unicodedata.normalize("NFKC", text))
    if digits.startswith("+81"):
        digits = "0" + digits[3:]
    return digits if _PHONE.fullmatch(digits) else None


def _group_event(event, group: str | None, zone: str) -> tuple[list[Inbound], str]:
    if group is None:
        return [], "not_applied"  # a multi-person chat (room): つながり runs in groups only
    if not is_group(group):
        return [], "not_a_group"
    at = event.timestamp
    if isinstance(event, JoinEvent):
        minute, interval = GROUP_START
        return [GroupJoined(at, group, Schedule(interval, minute, zone))], ""
    if isinstance(event, LeaveEvent):
        return [GroupLeft(at, group)], ""
    people = event.joined.members if isinstance(event, MemberJoinedEvent) else event.left.members
    ids = tuple(p.user_id for p in people if getattr(p, "user_id", None) and is_person(p.user_id))
    if not ids:
        return [], "no_user"
    if isinstance(event, MemberJoinedEvent):
        return [Roster(at, group, joined=ids)], ""
    return [Roster(at, group, left=ids)], ""


def postback_action(data: str) -> str | None:
    """The `action` of postback data written as a query string ("action=ok&cycle=3"), if any."""
    values = parse_qs(data, keep_blank_values=True).get("action")
    return values[0] if values else None


def audit_record(tenant: str, event, reason: str) -> dict:
    """Non-personal fields only: ids of the event, its kind and why it was not applied.

    No user, group or message ids, no text, no postback data beyond our own action name.
    """
    source = event.source_type if isinstance(event, Unknown) else getattr(event.source, "type", None)
    redelivery = event.redelivery if isinstance(event, Unknown) else event.delivery_context.is_redelivery
    record = {"tenant": tenant, "type": event.type, "webhookEventId": event.webhook_event_id,
              "timestamp": event.timestamp, "mode": _mode(event), "redelivery": redelivery,
              "source": source, "reason": reason}
    if isinstance(event, PostbackEvent):
        action = postback_action(event.postback.data)
        if action is not None and _ACTION.fullmatch(action):
            record["action"] = action
    return record


def _mode(event) -> str:
    mode = event.mode
    return getattr(mode, "value", mode)
