"""A partition's saved states, read back from its changelog: committed records only.

Read when a worker takes a partition, after Faust has started the partition's transactional
producer (which fences and aborts whatever the previous owner left open). Only committed records
are read (read_committed, up to the last stable offset), so a state from a transaction that never
committed is never loaded: a state comes back only with the effects that led to it.

Besides the subjects' states, the changelog holds one record under APPLIED: the offset of the last
inbound message whose output is in the changelog. Messages at or below it are acked, not stepped
again; Faust's commit may carry a batch's output in a transaction whose offsets stop short of it.

A state's record carries its next timer in a header (DUE), so that a partition is taken without
decoding its states: the due-index is built from the headers, and each state stays in its saved
bytes (`Saved`) until a tick or an event first steps it. Decoding was two thirds of a recovery
(26 µs a state; reading the record is 7).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.subject_agent import Tracked

APPLIED = b"~applied"  # not a LINE id (those start with U, C or R)
DUE = "due"            # a state record's header: its due instant (epoch ms), empty for none
UNSTATED = -1          # a record without the header (written before it): its state is decoded at once
MARK = "batch"         # the APPLIED record's header: random bytes of its batch's own, so that a snapshot
                       # names its last record by (offset, key, mark), never matched by a changelog made again


def due_header(due: int | None) -> list[tuple[str, bytes]]:
    return [(DUE, b"" if due is None else str(due).encode())]


def applied_headers(mark: bytes) -> list[tuple[str, bytes]]:
    return [(MARK, mark)]


def _header(headers, wanted: str) -> bytes | None:
    for name, value in headers:
        if name == wanted:
            return value
    return None


def _mark(headers) -> bytes:
    return _header(headers, MARK) or b""


def _due(headers) -> int | None:
    value = _header(headers, DUE)
    return UNSTATED if value is None else int(value) if value else None


class Saved(Tracked):
    """A partition's states, some still as saved bytes: each decoded when it is first read. One that
    cannot be decoded is left out (`rejected` is told), as if it had not been saved: the rest go on."""

    def __init__(self, decode: Callable[[str, bytes], object], rejected: Callable[[str, Exception], None]):
        super().__init__(())
        self._decode, self._rejected = decode, rejected

    def _decoded(self, subject: str, raw: bytes):
        try:
            state = self._decode(subject, raw)
        except Exception as error:
            dict.__delitem__(self, subject)
            self._rejected(subject, error)
            return None
        dict.__setitem__(self, subject, state)  # not a change: nothing to save again
        return state

    def __getitem__(self, subject: str):
        value = dict.__getitem__(self, subject)
        if type(value) is bytes:
            value = self._decoded(subject, value)
            if value is None:
                raise KeyError(subject)
        return value

    def get(self, subject: str, default=None):
        value = dict.get(self, subject, default)
        if type(value) is bytes:
            value = self._decoded(subject, value)
            return default if value is None else value
        return value


class Read(NamedTuple):
    states: dict[bytes, tuple[bytes | None, int | None]]  # key -> (state bytes, due or UNSTATED); a tail
                                                          # read keeps a deletion as (None, None)
    applied: int | None        # the last applied inbound offset the records say (None: they do not)
    last: tuple[int, bytes, bytes] | None  # (offset, key, mark) of the last record read


async def read(bootstrap: str, topic: str, number: int, since: tuple[int, bytes, bytes] | None = None) -> Read | None:
    """Changelog partition `number`, committed records only: all of it, or with `since` ((offset,
    key, mark) of the last record a snapshot holds) the records from that one on, if it is still
    there (None if not: a topic made again, or compacted past it)."""
    # auto_offset_reset="earliest": with the default "latest", a reset already in flight after assign
    # can land after seek_to_beginning, and the partition would read as empty: every subject lost.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest",
                                fetch_max_bytes=64 << 20, max_partition_fetch_bytes=64 << 20)
    await consumer.start()
    try:
        tp = TopicPartition(topic, number)
        consumer.assign([tp])
        if since is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, since[0])
        end = (await consumer.end_offsets([tp]))[tp]  # the last stable offset, under read_committed
        states: dict[bytes, tuple[bytes | None, int | None]] = {}
        last = None
        checked = since is None
        while await consumer.position(tp) < end:
            batches = await consumer.getmany(tp, timeout_ms=1000, max_records=100_000)
            for record in batches.get(tp, ()):
                if record.offset >= end:
                    break
                if not checked:
                    if (record.offset, record.key, _mark(record.headers)) != since:
                        return None
                    checked = True
                last = record
                if record.value is None:
                    if since is None:
                        states.pop(record.key, None)
                    else:
                        states[record.key] = (None, None)
                else:
                    states[record.key] = (record.value, _due(record.headers))
        if not checked:  # nothing at or after the snapshot's last record
            return None
        applied = states.pop(APPLIED, None)
        return Read(states, int(applied[0]) if applied is not None and applied[0] is not None else None,
                    (last.offset, last.key, _mark(last.headers)) if last is not None else since)
    finally:
        await consumer.stop()
