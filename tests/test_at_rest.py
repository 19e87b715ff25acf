"""What lies in the store's files: readable by their owner only (0600), made so before anything is
written, and an older file's mode mended when it is opened; phone numbers and secrets sealed
(streams/sealed.py): keys, rotation, and what happens when a key is missing. The bytes of whole
runs are searched in tests/test_conversations.py (embedded) and tests/test_kafka_line.py (Kafka)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from schemas.events import Phone, Register
from schemas.settings import MemberSettings, Schedule
from streams import codec, sealed
from streams.embedded.store import Store


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_store_and_its_wal_files_are_the_owners_only(tmp_path):
    old = os.umask(0o022)   # the usual umask would give 0644
    try:
        path = str(tmp_path / "anpi.db")
        store = Store(path)
        store.db.execute("CREATE TABLE t (x)")
        assert {name: mode(tmp_path / name) for name in os.listdir(tmp_path)} == \
            {"anpi.db": 0o600, "anpi.db-wal": 0o600, "anpi.db-shm": 0o600}
        store.close()
    finally:
        os.umask(old)


def test_an_older_file_readable_by_others_is_mended_when_opened(tmp_path):
    path = tmp_path / "anpi.db"
    Store(str(path)).close()
    os.chmod(path, 0o644)
    Store(str(path)).close()
    assert mode(path) == 0o600


# --- sealing (streams/sealed.py) ----------------------------------------------------------------------

OLD, NEW = sealed.new_key_line("old"), sealed.new_key_line("new")
NUMBER = "09012345678"


@pytest.fixture
def keys(monkeypatch):
    """Set ANPI_DATA_KEYS for one test (the suite's own key again after it)."""
    def use(value: str) -> None:
        monkeypatch.setenv(sealed.KEYS_ENV, value)
        sealed.reset()
    yield use
    monkeypatch.undo()
    sealed.reset()


def test_a_sealed_value_opens_to_itself_and_shows_nothing_of_it(keys):
    keys(OLD)
    text = sealed.seal(NUMBER)
    assert text.startswith("sealed:old:") and NUMBER not in text and "5678" not in text
    assert sealed.unseal(text) == NUMBER
    assert sealed.seal(NUMBER) == text   # deterministic: a state rewritten unchanged is the same bytes
    assert sealed.seal("09012345679") != text
    assert sealed.seal(None) is None and sealed.unseal(None) is None
    assert sealed.unseal(NUMBER) == NUMBER   # written before sealing began: read as it is
    assert sealed.seal(text) == text          # never sealed twice


def test_a_rotated_key_seals_new_values_and_still_opens_the_old(keys):
    keys(OLD)
    before = sealed.seal(NUMBER)
    keys(f"{NEW},{OLD}")
    after = sealed.seal(NUMBER)
    assert after.startswith("sealed:new:") and sealed.unseal(after) == sealed.unseal(before) == NUMBER
    keys(NEW)   # the old key dropped too early: its values no longer open, said without the value
    with pytest.raises(sealed.SealError, match="key 'old', which ANPI_DATA_KEYS does not hold") as e:
        sealed.unseal(before)
    assert NUMBER not in str(e.value)


def test_an_altered_value_does_not_open(keys):
    keys(OLD)
    text = sealed.seal(NUMBER)
    altered = text[:-2] + ("AA" if text[-2:] != "AA" else "BB")
    with pytest.raises(sealed.SealError, match="does not open"):
        sealed.unseal(altered)


def test_a_record_whose_key_is_gone_is_refused_as_undecodable_not_a_crash(keys):
    keys(OLD)
    settings = MemberSettings("U" + "1" * 32, "watch", Schedule("1d", 540, "Asia/Tokyo", None), NUMBER, ())
    records = [codec.dumps(codec.event_to_obj(Register(1, settings))),
               codec.dumps(codec.event_to_obj(Phone(1, settings.id, NUMBER)))]
    assert all(NUMBER.encode() not in r for r in records)
    assert codec.event_from_obj(codec.loads(records[0])).settings.phone == NUMBER
    assert codec.event_from_obj(codec.loads(records[1])).number == NUMBER
    keys(NEW)
    for record in records:
        with pytest.raises(codec.Undecodable, match="which ANPI_DATA_KEYS does not hold"):
            codec.event_from_obj(codec.loads(record))


def test_without_a_key_setting_one_key_file_is_made_for_every_process_of_the_machine(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != sealed.KEYS_ENV}
    env[sealed.KEY_FILE_ENV] = str(tmp_path / "var" / "anpi-data.key")
    script = "from streams import sealed; print(sealed.seal('09012345678'))"
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
            for _ in range(2)]
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout.startswith("sealed:local:")
    assert mode(tmp_path / "var" / "anpi-data.key") == 0o600


@pytest.mark.parametrize("value, says", [
    ("k1", "each key is <id>:<base64 of 32 bytes>"),
    ("k1:c2hvcnQ=", "key 'k1' is not the base64 of 32 bytes"),
    ("bad id:" + "A" * 44, "each key is"),
])
def test_a_key_setting_that_cannot_be_used_stops_a_command_at_its_start_in_one_line(tmp_path, value, says):
    run = subprocess.run([sys.executable, "-m", "streams.cli", "tenant", "list", "--db", str(tmp_path / "a.db")],
                         env={**os.environ, sealed.KEYS_ENV: value}, capture_output=True, text=True)
    assert run.returncode == 2 and says in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "a.db").exists()


def test_anpi_key_new_prints_a_key_the_setting_takes():
    run = subprocess.run([sys.executable, "-m", "streams.cli", "key", "new", "--id", "k2"], capture_output=True,
                         text=True, check=True)
    (kid, key), = sealed.parse_keys(run.stdout.strip())
    assert kid == "k2" and len(key) == 32


def test_residents_are_found_by_phone_through_a_blind_index_also_in_a_file_from_before_it(tmp_path):
    from streams.embedded import readside
    from streams.embedded.engine import Engine
    path = str(tmp_path / "anpi.db")
    store = Store(path)
    member = "U" + "5" * 32
    store.accept("town", None, [(member, Register(1_796_050_800_000, MemberSettings(
        member, "watch", Schedule("1d", 540, "Asia/Tokyo", None), "090-1234-5678", ())))])
    Engine(store, "town").step(1_796_050_800_000)
    assert readside.by_phone(store.db, "town", "09012345678") == [member]
    assert readside.by_phone(store.db, "town", "09000000000") == []
    (blind,) = store.db.execute("SELECT blind FROM rs_phones").fetchone()
    assert "12345678" not in blind and blind.startswith("test:")
    store.db.execute("DROP TABLE rs_phones")   # as a file written before the index
    store.close()
    store = Store(path)
    assert readside.by_phone(store.db, "town", "+81 90-1234-5678") == [member]
    store.close()
