"""The profiles in the embedded store's SQLite file: resident_profiles (tenant, member, sealed profile),
a table of the store's own (streams/embedded/store.py), which also deletes a row when its resident
withdraws, in the step's transaction."""
from __future__ import annotations

from streams.admin import accounts
from streams.embedded.store import Store
from streams.residents.profile import Profile, dumps, loads


class SqliteProfiles:
    def __init__(self, store: Store):
        self.store = store

    async def get(self, tenant, member):
        row = self.store.db.execute("SELECT profile FROM resident_profiles WHERE tenant = ? AND member = ?",
                                    (tenant, member)).fetchone()
        return loads(row[0]) if row else None

    async def many(self, tenant, members):
        out = {}
        for member in dict.fromkeys(members):
            found = await self.get(tenant, member)
            if found is not None:
                out[member] = found
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
