"""My Page on the embedded store's SQLite file (backends.Members, backends.Sessions)."""
from __future__ import annotations

from streams.embedded.store import Store
from streams.mypage import reading, sessions
from streams.mypage.backends import NotRegistered


class SqliteMembers:
    def __init__(self, store: Store):
        self.store = store
        reading.install(store.db)

    async def state(self, tenant, member):
        return reading.member_state(self.store, tenant, member)

    async def history(self, tenant, member, since, until):
        return reading.history(self.store.db, tenant, member, since, until)

    async def change(self, tenant, member, build):
        def write() -> None:  # inside the store's transaction: the state read is the state changed
            state = reading.member_state(self.store, tenant, member)
            if state is None:
                raise NotRegistered
            self.store.enqueue(tenant, [(member, e) for e in build(state)])
        await self.store.grouped(write)


class SqliteSessions:
    def __init__(self, store: Store):
        self.db = store.db
        sessions.install(self.db)

    async def start(self, tenant, member, now):
        return sessions.start(self.db, tenant, member, now)

    async def find(self, tenant, sid, now):
        return sessions.find(self.db, tenant, sid, now)

    async def set_flash(self, tenant, sid, text):
        sessions.set_flash(self.db, sid, text)

    async def pop_flash(self, tenant, sid):
        return sessions.pop_flash(self.db, sid)
