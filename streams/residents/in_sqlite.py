"""The profiles in the embedded store's SQLite file: resident_profiles (tenant, member, sealed profile),
a table of the store's own (streams/embedded/store.py), which also deletes a row when its resident
withdraws, in the step's transaction."""
from __future__ import annotations

from streams.admin import accounts
from streams.embedded.store import Store
from streams.residents.book import Pending, by_import
from streams.residents.profile import Profile, dumps, loads
from streams.residents.roster import Row
from streams.sealed import seal, unseal
from streams.residents.codes import VALID_FOR


class SqliteProfiles:
    def __init__(self, store: Store):
        self.store = store
        accounts.install(store.db)   # the audit log its writes go with

    async def get(self, tenant, member):
        row = self.store.db.execute("SELECT profile FROM resident_profiles WHERE tenant = ? AND member = ?",
                                    (tenant, member)).fetchone()
        return loads(row[0]) if row else None

    async def many(self, tenant, members):
        members = list(dict.fromkeys(members))
        out = {}
        for i in range(0, len(members), 500):   # a few hundred keys a statement
            chunk = members[i:i + 500]
            out.update((m, loads(raw)) for m, raw in self.store.db.execute(
                f"SELECT member, profile FROM resident_profiles WHERE tenant = ? AND member IN "
                f"({','.join('?' * len(chunk))})", (tenant, *chunk)))
        return out

    async def all(self, tenant):
        return {m: loads(raw) for m, raw in self.store.db.execute(
            "SELECT member, profile FROM resident_profiles WHERE tenant = ?", (tenant,))}

    async def put(self, tenant, member, profile: Profile, audit):
        db = self.store.db
        with self.store.transaction():
            if profile.empty():
                db.execute("DELETE FROM resident_profiles WHERE tenant = ? AND member = ?", (tenant, member))
            else:
                db.execute("INSERT OR REPLACE INTO resident_profiles VALUES (?, ?, ?)", (tenant, member, dumps(profile)))
            accounts.audit(db, tenant, *audit)

    async def delete(self, tenant, member):
        self.store.db.execute("DELETE FROM resident_profiles WHERE tenant = ? AND member = ?", (tenant, member))

    async def add_pending(self, tenant, entries, at, audit):
        db = self.store.db
        with self.store.transaction():
            db.executemany("INSERT OR REPLACE INTO resident_pending VALUES (?, ?, ?, ?, ?, NULL)",
                           [(tenant, h, seal(row.dumps()), at, at + VALID_FOR) for h, row in entries])
            accounts.audit(db, tenant, *audit)

    async def pending(self, tenant):
        return by_import([Pending(h, Row.loads(unseal(raw)), created, until, used) for h, raw, created, until, used in
                          self.store.db.execute("SELECT hash, row, created_at, valid_until, used_by FROM "
                                                "resident_pending WHERE tenant = ?", (tenant,))])

    async def claim(self, tenant, code_hash, line_user, at):
        db = self.store.db
        with self.store.transaction():
            found = db.execute("SELECT row, valid_until, used_by FROM resident_pending WHERE tenant = ? AND hash = ?",
                               (tenant, code_hash)).fetchone()
            if found is None or found[1] < at or found[2] not in (None, line_user):
                return None
            row = Row.loads(unseal(found[0]))
            db.execute("UPDATE resident_pending SET used_by = ? WHERE tenant = ? AND hash = ?", (line_user, tenant, code_hash))
            if found[2] is None:   # the first time: the profile becomes theirs (a redelivery keeps staff's edits)
                db.execute("INSERT OR REPLACE INTO resident_profiles VALUES (?, ?, ?)",
                           (tenant, line_user, dumps(row.profile(at, "(名簿)"))))
            return row
