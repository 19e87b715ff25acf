"""A partition's states kept on the worker's disk, so that taking the partition again reads only the
changelog's tail (a worker restarted after a crash, a rolling restart, a partition back after a
rebalance). The changelog stays the truth: a snapshot is a copy of what it said up to one of its
records, and is used only when that record is still there.

    <datadir>/snapshots/<changelog topic>.<partition>     mode 0600, replaced whole (a temporary
                                                          file renamed over it)

holding (FORMAT, topic, partition, last, applied, written_at, tables) in marshal's format: `last` the
(offset, key, batch mark) of the last changelog record it holds, `applied` the last applied inbound offset,
`tables` per tenant the subjects, their states as the changelog has them (bytes) and their due
instants. The states stay bytes when loaded: each is decoded when first stepped (changelog.Saved).

When it is written: after a partition is taken (what was just read), then after a batch, at most
every `Settings.snapshot_seconds`, from a copy of the partition's tables made between two batches:
the states of committed batches only (a batch's states are kept only once its transaction has
committed). The copy is encoded and written in a thread.

When it is not used (the whole changelog is read instead): another topic or partition, older than
MAX_AGE (a deletion's tombstone is compacted away after the topic's delete.retention.ms, a day by
default; an older copy could bring back a subject deleted meanwhile), or a changelog that no longer
has its last record at its offset (a topic deleted and made again, or compacted past it). A
snapshot is written only when its last record is a batch's APPLIED mark, whose random bytes no
other changelog has.

The file holds what the changelog holds, phone numbers included: it is the worker's own, mode 0600.
"""
from __future__ import annotations

import logging
import marshal
import os
import time
from typing import NamedTuple

from streams import codec

FORMAT = 1
MAX_AGE = 12 * 3600.0
log = logging.getLogger("anpi.snapshot")

Table = tuple[list[str], list[bytes], list[int | None]]   # subjects, their states' bytes, their due instants


class Snapshot(NamedTuple):
    last: tuple[int, bytes, bytes]  # (offset, key, batch mark) of the last changelog record it holds
    applied: int
    tables: dict[str, Table]        # tenant -> its subjects


def path(datadir: str, topic: str, number: int) -> str:
    return os.path.join(datadir, "snapshots", f"{topic}.{number}")


def load(file: str, topic: str, number: int, wall: float | None = None) -> Snapshot | None:
    """The snapshot in `file`, if it is one of this changelog partition and young enough."""
    try:
        with open(file, "rb") as f:
            data = marshal.loads(f.read())  # marshal.load(f) reads the file in small pieces: 6× slower
        form, of_topic, of_number, last, applied, written_at, tables = data
    except FileNotFoundError:
        return None
    except Exception as error:   # a file cut short or of another format: the changelog has it all
        log.warning("%s: not a snapshot this worker can read (%s); the changelog is read whole",
                    file, type(error).__name__)
        return None
    if (form, of_topic, of_number) != (FORMAT, topic, number):
        return None
    if (time.time() if wall is None else wall) - written_at > MAX_AGE:
        log.info("%s: older than %.0f h; the changelog is read whole", file, MAX_AGE / 3600)
        return None
    return Snapshot(tuple(last), applied, tables)


def encode(copies: dict[str, tuple[dict, dict[str, int]]]) -> dict[str, Table]:
    """Per tenant, (a copy of its table: subject -> state or its saved bytes, each subject's due) as
    the file keeps it: every state as the changelog has it."""
    out: dict[str, Table] = {}
    for tenant, (table, dues) in copies.items():
        subjects, raws, due = [], [], []
        for subject, state in table.items():
            subjects.append(subject)
            raws.append(state if type(state) is bytes else codec.dumps(codec.state_to_obj(state)))
            due.append(dues.get(subject))
        out[tenant] = (subjects, raws, due)
    return out


def write(file: str, topic: str, number: int, last: tuple[int, bytes, bytes], applied: int,
          tables: dict[str, Table], wall: float | None = None) -> None:
    """Replace `file` with this snapshot, whole or not at all."""
    os.makedirs(os.path.dirname(file), mode=0o700, exist_ok=True)
    temporary = f"{file}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(marshal.dumps((FORMAT, topic, number, last, applied, time.time() if wall is None else wall, tables)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, file)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
