"""What lies in the store's files: readable by their owner only (0600), made so before anything is
written, and an older file's mode mended when it is opened."""
from __future__ import annotations

import os
import stat

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
