"""Every record of the Kafka runtime's topics, built and read here and nowhere else.

The topics are shared by every tenant of a deployment (`<prefix>-inbound`, `-effects`, `-outbox`,
`-escalations`, `-quarantine`, the changelog): a record names its tenant in its key and its value.

    key     "<tenant>\\x1f<subject>"; partition = crc32(key) % partitions (settings.partition_of), so
            a subject's events, state and timers share a partition. The tenant named like the prefix
            (the home tenant: a deployment of before, one tenant per prefix) keeps bare keys,
            "<subject>", and values without "tenant": its topics and changelog read on unchanged.
    inbound {"subject", "event", ["reply": [token, ms]], ["tenant"]} | {"tick": ms, ["flush"]}
            (a tick is the partition's, for every tenant on it)
    effects / outbox / escalations   the effect (codec.effect_to_obj) with "tenant" (not home);
            the outbox's may carry "reply_token"/"reply_token_at", the escalations' a staff call's
            "phone"; markers {"batch_end": offset} (outbox) and {"flush", "partition"} (effects)
    changelog  the subject's state under the subject's key; APPLIED (streams/kafka/changelog.py)
"""
from __future__ import annotations

from collections.abc import Iterator
from schemas.effects import Effect
from schemas.events import RollCall, Tick
from streams import codec
from streams.codec import Undecodable
from streams.kafka.settings import partition_of
from streams.step import Input

Message = tuple[int, bytes, bytes]  # partition, key, value
SEP = "\x1f"  # between tenant and subject in a key: in neither a tenant id nor a LINE id


class Naming:
    """Keys and tenant fields of one deployment, whose home tenant is `home` (its prefix)."""

    def __init__(self, home: str):
        self.home = home

    def key(self, tenant: str, subject: str) -> str:
        return subject if tenant == self.home else f"{tenant}{SEP}{subject}"

    def split(self, key: bytes | str) -> tuple[str, str]:
        """(tenant, subject) of a key."""
        text = key.decode() if isinstance(key, bytes) else key
        tenant, sep, subject = text.partition(SEP)
        return (tenant, subject) if sep else (self.home, text)

    def tenant_of(self, obj: dict) -> str:
        tenant = obj.get("tenant")
        return tenant if isinstance(tenant, str) and tenant else self.home

    def tagged(self, tenant: str, obj: dict) -> dict:
        return obj if tenant == self.home else {**obj, "tenant": tenant}

    # --- inbound --------------------------------------------------------------------------------

    def event_message(self, tenant: str, subject: str, event, partitions: int,
                      reply: tuple[str, int] | None = None) -> Message:
        """An inbound event for one subject of `tenant`, on that subject's partition. `reply`: the
        reply token that came with it and its time, so that the answer can go by the free reply API."""
        key = self.key(tenant, subject)
        obj = self.tagged(tenant, {"subject": subject, "event": codec.event_to_obj(event)})
        if reply is not None:
            obj["reply"] = list(reply)
        return partition_of(key, partitions), key.encode(), codec.dumps(obj)

    def rollcall_messages(self, tenant: str, event: RollCall, partitions: int) -> Iterator[Message]:
        """`tenant`'s roll-call on every partition (each applies it to its own subjects of the
        tenant), keyed like a tick: it is the partition's, not one subject's."""
        value = codec.dumps(self.tagged(tenant, {"rollcall": codec.event_to_obj(event)}))
        for number in range(partitions):
            yield number, b"", value

    def read(self, value: bytes | None) -> Input:
        """The record an inbound message holds, or `Undecodable` (or a JSON error) saying why not."""
        if not value:
            raise Undecodable("empty message")
        obj = codec.loads(value)
        if not isinstance(obj, dict):
            raise Undecodable("message: expected a JSON object")
        flush = obj.get("flush")
        if flush is not None and not isinstance(flush, str):
            raise Undecodable("flush: expected a string")
        if "tick" in obj:
            if type(obj["tick"]) is not int:
                raise Undecodable("tick: expected an integer (epoch ms)")
            return Input(None, None, Tick(obj["tick"]), None, flush)
        if "rollcall" in obj:
            tenant = obj.get("tenant", self.home)
            if not isinstance(tenant, str) or not tenant:
                raise Undecodable("tenant: expected a string")
            event = codec.event_from_obj(obj["rollcall"])
            if type(event) is not RollCall:
                raise Undecodable("rollcall: expected a roll-call")
            return Input(tenant, None, event, None, flush)
        subject, reply, tenant = obj.get("subject"), obj.get("reply"), obj.get("tenant", self.home)
        if not isinstance(subject, str):
            raise Undecodable("subject: expected a string")
        if not isinstance(tenant, str) or not tenant:
            raise Undecodable("tenant: expected a string")
        if "event" not in obj:
            raise Undecodable("event: missing")
        event = codec.event_from_obj(obj["event"])
        if reply is not None:
            if not (isinstance(reply, list) and len(reply) == 2 and isinstance(reply[0], str)
                    and type(reply[1]) is int):
                raise Undecodable("reply: expected [token, epoch ms]")
            reply = (reply[0], reply[1])
        return Input(tenant, subject, event, reply, flush)

    # --- what the subject agent writes ------------------------------------------------------------

    def effect(self, tenant: str, effect: Effect, **extra) -> tuple[bytes, bytes]:
        """(key, value) of an effect on the effects, outbox or escalations topic; `extra`: the
        outbox's reply token, the escalations' phone."""
        return (self.key(tenant, effect.subject).encode(),
                codec.dumps({**self.tagged(tenant, codec.effect_to_obj(effect)), **extra}))


_BARE = Naming("")


def event_message(subject: str, event, partitions: int, reply: tuple[str, int] | None = None) -> Message:
    """The home tenant's inbound message (a bare key): what `anpi simulate --runtime kafka` and the
    drivers of one-tenant runs write."""
    return _BARE.event_message("", subject, event, partitions, reply)


def tick(at: int, flush: str | None = None) -> bytes:
    """A tick's value (its key is empty: it is the partition's)."""
    return codec.dumps({"tick": at} if flush is None else {"tick": at, "flush": flush})


def rollcall_messages(event: RollCall, partitions: int, tenant: str = "") -> Iterator[Message]:
    """The home tenant's roll-call (or `tenant`'s, tagged) on every partition: what one-tenant drivers write."""
    return _BARE.rollcall_messages(tenant, event, partitions)


def tick_messages(at: int, partitions: int, flush: str | None = None) -> Iterator[Message]:
    """A tick for every partition; with `flush`, the worker echoes it on the effects topic when done."""
    value = tick(at, flush)
    for number in range(partitions):
        yield number, b"", value


def batch_end(offset: int) -> bytes:
    """The outbox's mark after a batch's messages (streams/kafka/sender_app.py delivers up to it)."""
    return codec.dumps({"batch_end": offset})


def flushed(flush: str, partition: int) -> bytes:
    """The effects topic's echo of a flush token: everything before it on the partition is out."""
    return codec.dumps({"flush": flush, "partition": partition})


def output(value: bytes) -> dict:
    """A record of the effects, outbox or escalations topic as its JSON object (a marker too)."""
    obj = codec.loads(value)
    if not isinstance(obj, dict):
        raise Undecodable("record: expected a JSON object")
    return obj
