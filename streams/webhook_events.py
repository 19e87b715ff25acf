"""LINE webhook bodies -> engine events. Pure: bytes in, plain records out; no clock, no I/O.

Two steps, each with one job:

  parse(body)          the raw (already signature-checked) body -> LINE's event models (line-bot-sdk v3),
                       or `Malformed` with a one-line reason that never quotes the body (it may hold
                       message text)
  route(tenant, evs)   the models -> `Routed`: engine events for what the engine acts on, audit
                       records for everything else, and the reply tokens of the people who wrote

What the engine acts on (everything else is audited, never an error, so that a new LINE event type
or a postback of another feature can never make LINE's delivery fail):

  postback "action=ok" from a person      Ok(at, member, group if given in a group)
  any message from a person               Message(at, member, group if written in a group)
  follow / unfollow                       Follow / Unfollow

`at` is the webhook event's own `timestamp` (when LINE saw the tap), not when it reached us: the
engine gives ties at a deadline to the resident, and a tap must not lose that because a webhook
was slow or redelivered. Events in `standby` mode belong to another channel's module: audited only.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from linebot.v3.webhooks import (DeliveryContext, Event, FollowEvent, GroupSource, MessageContent,
                                 MessageEvent, PostbackEvent, RoomSource, Source, UnfollowEvent)
from pydantic.v1 import ValidationError

from schemas.events import Follow, Inbound, Message, Ok, Unfollow

INT64 = 1 << 63
MODES = ("active", "standby")
_ACTION = re.compile(r"[A-Za-z0-9_.-]{1,32}")  # an action name of our own postbacks: safe to audit


class Malformed(ValueError):
    """The body is not a webhook body LINE would send; `str(error)` is the one-line reason."""


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
    lets the sender judge whether one is still worth trying. Only one-to-one chats give a token
    here, since a token from a group event replies into the group, not to the member.
    """
    events: list[Inbound] = field(default_factory=list)
    audit: list[dict] = field(default_factory=list)
    reply_tokens: dict[str, tuple[str, int]] = field(default_factory=dict)


# --- parse ----------------------------------------------------------------------------------------


def parse(body: bytes) -> list:
    """The events of a webhook body, in body order: SDK models, or `Unknown` for types it lacks."""
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise Malformed(f"body is not JSON: {error.__class__.__name__} at position "
                        f"{getattr(error, 'pos', getattr(error, 'start', '?'))}") from None
    if not isinstance(obj, dict):
        raise Malformed("body: expected a JSON object")
    try:  # JSON may escape half a UTF-16 pair ("\ud800"); no id or topic can carry that string
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise Malformed("body: a string holds an unpaired UTF-16 surrogate") from None
    # destination is the bot's own user id; it is checked for shape only (the tenant is in the URL)
    if not isinstance(obj.get("destination"), str):
        raise Malformed("destination: expected a string")
    events = obj.get("events")
    if not isinstance(events, list):
        raise Malformed("events: expected an array")
    return [_event(i, e) for i, e in enumerate(events)]


def _event(i: int, obj) -> object:
    where = f"events[{i}]"
    problem = _envelope_problem(obj)
    if problem:
        raise Malformed(f"{where}{problem}")
    if Event.get_discriminator_value(obj) is None:
        source = obj.get("source")
        return Unknown(obj["type"], obj["timestamp"], obj["mode"], obj["webhookEventId"],
                       obj["deliveryContext"]["isRedelivery"], source["type"] if source else None)
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


# --- route ----------------------------------------------------------------------------------------


def route(tenant: str, events: list) -> Routed:
    routed = Routed()
    for event in events:
        inbound, reason = _inbound(event)
        if inbound is None:
            routed.audit.append(audit_record(tenant, event, reason))
            continue
        routed.events.append(inbound)
        token = getattr(event, "reply_token", None)
        if token and not isinstance(event.source, (GroupSource, RoomSource)):
            held = routed.reply_tokens.get(inbound.member)
            if held is None or held[1] <= event.timestamp:  # the newest token is the one still alive
                routed.reply_tokens[inbound.member] = (token, event.timestamp)
    return routed


def _inbound(event) -> tuple[Inbound | None, str]:
    """The engine event for one LINE event, or None and the reason it is only audited."""
    if isinstance(event, Unknown):
        return None, "unknown_type"
    if _mode(event) != "active":
        return None, "standby"  # another channel is in control: we must not act or reply
    if not isinstance(event, (PostbackEvent, MessageEvent, FollowEvent, UnfollowEvent)):
        return None, "not_applied"  # join / leave / memberJoined / memberLeft / unsend / beacon / ...
    member = getattr(event.source, "user_id", None)
    if not member:
        return None, "no_user"  # e.g. a group message from a client that hides its userId
    at = event.timestamp
    group = event.source.group_id if isinstance(event.source, GroupSource) else None
    if isinstance(event, PostbackEvent):
        if postback_action(event.postback.data) == "ok":
            return Ok(at, member, group), ""
        return None, "postback"  # e.g. action=ack (見に行きます): another feature's, not a sign of life here
    if isinstance(event, MessageEvent):
        return Message(at, member, group), ""
    if isinstance(event.source, (GroupSource, RoomSource)):
        return None, "not_applied"  # follow / unfollow only come from one-to-one chats
    return (Follow(at, member) if isinstance(event, FollowEvent) else Unfollow(at, member)), ""


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
