"""A partition's snapshot on the worker's disk (streams/kafka/snapshot.py): written whole, read back
only when it is of the same changelog partition and young enough, states kept as the changelog has them."""
import os
import stat

from agents import member
from schemas.events import Register
from schemas.settings import MemberSettings, Schedule
from streams import codec
from streams.kafka import snapshot

START = 1_796_050_800_000  # a virtual instant (00:00 JST)
WALL = 2_000_000_000.0     # the wall clock the tests pass in (epoch seconds)


def _state(uid: str):
    return member.register(Register(START, MemberSettings(uid, "watch", Schedule("1d", 9 * 60), "090-0000-0000")))


def test_a_snapshot_keeps_saved_bytes_as_they_are_and_encodes_decoded_states_as_the_changelog_does(tmp_path):
    decoded, saved = _state("U1"), codec.dumps(codec.state_to_obj(_state("U2")))
    tables = snapshot.encode({"t": ({"U1": decoded, "U2": saved}, {"U1": decoded.due, "U2": 123})})
    assert tables == {"t": (["U1", "U2"], [codec.dumps(codec.state_to_obj(decoded)), saved], [decoded.due, 123])}
    file = snapshot.path(str(tmp_path), "anpi-changelog", 3)
    snapshot.write(file, "anpi-changelog", 3, (41, b"~applied", b"m1"), 17, tables, wall=WALL)
    assert stat.S_IMODE(os.stat(file).st_mode) == 0o600 and os.listdir(os.path.dirname(file)) == ["anpi-changelog.3"]
    got = snapshot.load(file, "anpi-changelog", 3, wall=WALL + 60)
    assert got == snapshot.Snapshot((41, b"~applied", b"m1"), 17, tables)
    assert codec.state_from_obj(codec.loads(got.tables["t"][1][0])) == decoded


def test_a_snapshot_of_another_partition_too_old_or_unreadable_is_not_used(tmp_path):
    file = snapshot.path(str(tmp_path), "anpi-changelog", 0)
    assert snapshot.load(file, "anpi-changelog", 0) is None   # none yet
    snapshot.write(file, "anpi-changelog", 0, (5, b"~applied", b"m2"), 2, {}, wall=WALL)
    assert snapshot.load(file, "anpi-changelog", 1, wall=WALL) is None
    assert snapshot.load(file, "other-changelog", 0, wall=WALL) is None
    assert snapshot.load(file, "anpi-changelog", 0, wall=WALL + snapshot.MAX_AGE + 1) is None
    assert snapshot.load(file, "anpi-changelog", 0, wall=WALL + snapshot.MAX_AGE - 1) is not None
    with open(file, "r+b") as f:   # cut short, as a full disk or a crash mid-write would leave it
        f.truncate(10)
    assert snapshot.load(file, "anpi-changelog", 0, wall=WALL) is None
