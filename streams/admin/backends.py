"""What the admin pages read and write through, with one implementation per runtime.

    ReadSide   the read side (counts, cases, acks, groups, labels) and the call queue's one write:
               staff recording an outcome (with its audit row, and a Resolve for the engine)
    Staff      accounts, sessions, lockouts and the audit log

    embedded (`anpi serve`, `anpi demo`)   SqliteReadSide, SqliteStaff: the store's SQLite file
                                           (streams/embedded/readside.py, streams/admin/accounts.py)
    Kafka    (`anpi admin serve`)          RedisReadSide (streams/kafka/readside.py, kept by `anpi
                                           readside`), RedisStaff (streams/admin/redis_accounts.py);
                                           a Resolve goes onto the tenant's inbound topic (KafkaSink)

Every method is a coroutine (Redis is asynchronous; SQLite's calls are short and synchronous, run
inline as before). The pages (streams/admin/pages.py, auth.py) never see which one they have.
"""
from __future__ import annotations

import json

from typing import Protocol

from agents import readside as rs
from agents.group import UNCONFIRMED_AFTER
from agents.member import ESCALATED
from schemas import effects as fx
from schemas.events import Resolve, RollCall, SetArea
from streams import codec
from streams.admin import accounts
from streams.embedded import readside as sqlite_rs
from streams.embedded.store import Store


class ReadSide(Protocol):
    async def overview(self, tenant: str, days: list[str], month: str) -> tuple[dict, int, dict[str, int]]:
        """({day: {kind: n}} for `days`, messages billed in `month`, {escalation kind: open cases})."""

    async def labels(self, tenant: str) -> dict[str, int]: ...

    async def open_count(self, tenant: str, kind: str) -> int: ...

    async def oldest_open(self, tenant: str, kind: str) -> int | None:
        """When the oldest open case of `kind` escalated (epoch ms), or None with none open."""

    async def cases(self, tenant: str, kind: str, status: str, limit: int = 200) -> list[dict]:
        """Rows with sqlite_rs.CASE_COLUMNS plus `phone` (staff calls) and `sent_at` (the cycle's check)."""

    async def case(self, tenant: str, member: str, cycle: int) -> dict | None: ...

    async def acknowledged(self, tenant: str, keys: list[tuple[str, int]]) -> dict[tuple[str, int], list[int]]: ...

    async def groups(self, tenant: str, now: int, limit: int = 500) -> list[dict]: ...

    async def record_outcome(self, tenant: str, member: str, cycle: int, outcome: str, now: int, wall: int,
                             login: str) -> bool:
        """Staff recorded `outcome` on an open staff-call case (audited); False if it is not open."""

    async def rollcalls(self, tenant: str, limit: int = 50) -> list[dict]:
        """The roll-calls, newest first: {rollcall, drill, at, asked}."""

    async def rollcall_tally(self, tenant: str, rollcall: str) -> dict[str, dict[str, int]]:
        """agents/readside.roll_tally: {area (or "" / "*" for all): {status: n, "asked": n}}."""

    async def rollcall_members(self, tenant: str, rollcall: str, status: str, limit: int = 5000) -> list[dict]:
        """Members waiting, listed (by area) or asking for help (by when): member, area, sent_at, answered_at."""

    async def rollcall_curve(self, tenant: str, rollcall: str, until_minutes: int) -> list[int]: ...

    async def clear_drill(self, tenant: str, rollcall: str) -> int:
        """Forget a drill's tally; 0 for a real roll-call (kept as the record)."""

    async def start_rollcall(self, tenant: str, rollcall: RollCall, wall: int, login: str) -> None:
        """Staff start a roll-call by hand: to the engine (the inbox, or every inbound partition), audited."""

    async def area_of(self, tenant: str, subject: str) -> tuple[bool, str | None]:
        """(whether the resident or group is known, its area) as the read side has it now."""

    async def set_area(self, tenant: str, area: SetArea, wall: int, login: str) -> None:
        """Staff set a resident's or a group's area: to the engine, audited."""


    async def by_phone(self, tenant: str, phone: str) -> list[str]:
        """The residents whose phone number is `phone` (digits only), by the read side's blind index."""

    async def held_about(self, tenant: str, member: str) -> dict | None:
        """Everything the read side holds about one resident, for a disclosure request (APPI):
        {state (agents' plain record, or None), cases, history (their effects), rollcalls}; None
        when it holds nothing at all."""


class Staff(Protocol):
    async def authenticate(self, tenant: str, login: str, password: str, now) -> str: ...
    async def exists(self, tenant: str, login: str) -> bool: ...
    async def open_session(self, tenant: str, login: str, now: int) -> str: ...
    async def session(self, session_id: str | None, now: int) -> accounts.Session | None: ...
    async def close_session(self, session_id: str | None) -> None: ...
    async def audit(self, tenant: str, at: int, login: str, action: str, target: str | None = None,
                    detail: str | None = None) -> None: ...
    async def audit_log(self, tenant: str, limit: int = 200) -> list[dict]: ...
    async def users(self, tenant: str) -> list[dict]: ...
    async def add_user(self, tenant: str, login: str, role: str, hashed: str, now: int, by: str) -> None:
        """The account and its audit row together; AccountError if the login is taken."""
    async def unlock(self, tenant: str, login: str) -> bool: ...
    # staff alerts on LINE (agents/on_call.py)
    async def line_code(self, tenant: str, login: str, now: int) -> str: ...
    async def link_line(self, tenant: str, code: str, line_user: str, now: int) -> str | None: ...
    async def unlink_line(self, tenant: str, login: str) -> bool: ...
    async def set_duty(self, tenant: str, login: str, start: int, end: int) -> None: ...
    async def on_call(self, tenant: str) -> list: ...


# --- embedded: the store's SQLite file ------------------------------------------------------------------


class SqliteReadSide:
    def __init__(self, store: Store):
        self.store = store

    async def overview(self, tenant, days, month):
        db = self.store.db
        counts = sqlite_rs.daily(db, tenant, days[0], days[-1])
        return counts, sqlite_rs.usage(db, tenant, month), \
            {kind: sqlite_rs.open_count(db, tenant, kind) for kind in fx.ESCALATIONS}

    async def labels(self, tenant):
        return sqlite_rs.labels(self.store.db, tenant)

    async def open_count(self, tenant, kind):
        return sqlite_rs.open_count(self.store.db, tenant, kind)

    async def oldest_open(self, tenant, kind):
        return sqlite_rs.oldest_open(self.store.db, tenant, kind)

    async def cases(self, tenant, kind, status, limit=200):
        db = self.store.db
        return [self._details(db, tenant, row) for row in sqlite_rs.cases(db, tenant, kind, status, limit)]

    @staticmethod
    def _details(db, tenant: str, row: dict) -> dict:
        state = sqlite_rs.state_of(db, tenant, row["member"])
        return {**row, "phone": getattr(getattr(state, "settings", None), "phone", None),
                "sent_at": sqlite_rs.check_sent_at(db, tenant, row["member"], row["cycle"])}

    async def case(self, tenant, member, cycle):
        return sqlite_rs.case(self.store.db, tenant, member, cycle)

    async def acknowledged(self, tenant, keys):
        return {key: sqlite_rs.acknowledged(self.store.db, tenant, *key) for key in keys}

    async def groups(self, tenant, now, limit=500):
        return sqlite_rs.groups(self.store.db, tenant, limit)

    async def record_outcome(self, tenant, member, cycle, outcome, now, wall, login):
        store = self.store
        row = sqlite_rs.case(store.db, tenant, member, cycle)
        if row is None or row["kind"] not in fx.ESCALATIONS or row["status"] != "open":
            return False
        state = sqlite_rs.state_of(store.db, tenant, member)
        # The engine can resolve only the escalation it still has open; a case it has already let go of
        # (the resident blocked the account meanwhile, say) is closed here instead.
        resolve = outcome == rs.REACHED and getattr(state, "phase", None) == ESCALATED and state.cycle == cycle
        close_here = outcome == rs.EMERGENCY or (outcome == rs.REACHED and not resolve)

        def write() -> None:
            sqlite_rs.record_action(store.db, tenant, member, cycle, outcome, now, close=close_here)
            accounts.audit(store.db, tenant, wall, login, f"case.{outcome}", f"{member}:{cycle}")
            if resolve:
                store.enqueue(tenant, [(member, Resolve(now, member, cycle))])

        await store.grouped(write)
        return True


    async def rollcalls(self, tenant, limit=50):
        return sqlite_rs.rollcalls(self.store.db, tenant, limit)

    async def rollcall_tally(self, tenant, rollcall):
        return sqlite_rs.rollcall_tally(self.store.db, tenant, rollcall)

    async def rollcall_members(self, tenant, rollcall, status, limit=5000):
        return sqlite_rs.rollcall_members(self.store.db, tenant, rollcall, status, limit)

    async def rollcall_curve(self, tenant, rollcall, until_minutes):
        return sqlite_rs.rollcall_curve(self.store.db, tenant, rollcall, until_minutes)

    async def clear_drill(self, tenant, rollcall):
        with self.store.transaction():
            return sqlite_rs.clear_drill(self.store.db, tenant, rollcall)

    async def start_rollcall(self, tenant, rollcall, wall, login):
        store = self.store

        def write() -> None:   # the roll-call and its audit row in one commit
            store.enqueue(tenant, [("", rollcall)])
            accounts.audit(store.db, tenant, wall, login, "rollcall.start", rollcall.id, rollcall_detail(rollcall))

        await store.grouped(write)

    async def area_of(self, tenant, subject):
        row = self.store.db.execute("SELECT state FROM states WHERE tenant = ? AND subject = ?",
                                    (tenant, subject)).fetchone()
        return (False, None) if row is None else (True, codec.state_from_obj(codec.loads(row[0])).settings.area)

    async def set_area(self, tenant, area, wall, login):
        store = self.store

        def write() -> None:   # the change and its audit row in one commit
            store.enqueue(tenant, [(area.subject, area)])
            accounts.audit(store.db, tenant, wall, login, "area.set", area.subject, area_detail(area))

        await store.grouped(write)


    async def by_phone(self, tenant, phone):
        return sqlite_rs.by_phone(self.store.db, tenant, phone)

    async def held_about(self, tenant, member):
        db = self.store.db
        state = sqlite_rs.state_of(db, tenant, member)
        cases = [dict(zip(sqlite_rs.CASE_COLUMNS, row)) for row in db.execute(
            f"SELECT {', '.join(sqlite_rs.CASE_COLUMNS)} FROM rs_cases WHERE tenant = ? AND member = ? ORDER BY cycle",
            (tenant, member))]
        history = [json.loads(raw) for (raw,) in db.execute(
            "SELECT effect FROM effects WHERE tenant = ? AND id >= ? AND id < ? ORDER BY at, seq",
            (tenant, member + ":", member + ";"))]
        rolls = [dict(zip(ROLL_FIELDS, row)) for row in db.execute(
            f"SELECT {', '.join(ROLL_FIELDS)} FROM rs_rolls WHERE tenant = ? AND member = ? ORDER BY sent_at",
            (tenant, member))]
        return held(state, cases, history, rolls)


class SqliteStaff:
    def __init__(self, store: Store):
        self.store = store

    async def authenticate(self, tenant, login, password, now, source=""):
        return await accounts.authenticate(self.store.db, tenant, login, password, now, source)

    async def exists(self, tenant, login):
        return accounts.exists(self.store.db, tenant, login)

    async def open_session(self, tenant, login, now):
        return accounts.open_session(self.store.db, tenant, login, now)

    async def session(self, session_id, now):
        return accounts.session(self.store.db, session_id, now)

    async def close_session(self, session_id):
        accounts.close_session(self.store.db, session_id)

    async def audit(self, tenant, at, login, action, target=None, detail=None):
        accounts.audit(self.store.db, tenant, at, login, action, target, detail)

    async def audit_log(self, tenant, limit=200):
        return accounts.audit_log(self.store.db, tenant, limit)

    async def users(self, tenant):
        return accounts.users(self.store.db, tenant)

    async def add_user(self, tenant, login, role, hashed, now, by):
        db = self.store.db
        with self.store.transaction():
            accounts.add_hashed(db, tenant, login, role, hashed, now)
            accounts.audit(db, tenant, now, by, "user.create", login, role)

    async def unlock(self, tenant, login):
        return accounts.unlock(self.store.db, tenant, login)

    async def line_code(self, tenant, login, now):
        with self.store.transaction():
            return accounts.line_code(self.store.db, tenant, login, now)

    async def link_line(self, tenant, code, line_user, now):
        with self.store.transaction():
            login = accounts.link_line(self.store.db, tenant, code, line_user, now)
            if login is not None:
                accounts.audit(self.store.db, tenant, now, login, accounts.LINE_LINKED)
            return login

    async def unlink_line(self, tenant, login):
        return accounts.unlink_line(self.store.db, tenant, login)

    async def set_duty(self, tenant, login, start, end):
        accounts.set_duty(self.store.db, tenant, login, start, end)

    async def on_call(self, tenant):
        return accounts.on_call_staff(self.store.db, tenant)


# --- Kafka: Redis, and the tenant's inbound topic -------------------------------------------------------


ROLL_FIELDS = ("rollcall", "area", "drill", "sent_at", "answer", "answered_at", "listed")


def held(state, cases: list, history: list, rolls: list) -> dict | None:
    """A disclosure's record, the same from either read side."""
    if state is None and not (cases or history or rolls):
        return None
    return {"state": plain(state), "cases": cases, "history": history, "rollcalls": rolls}


def plain(value):
    """A state as JSON-ready data: records as objects by field name, sets as sorted lists."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if hasattr(value, "__dataclass_fields__"):
        return {k: plain(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, (frozenset, set)):
        return sorted(plain(v) for v in value)
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value


class RedisReadSide:
    """The read side `anpi readside` keeps in Redis; a Resolve goes to the engine through `sink`
    (streams/ingress.KafkaSink: the runtime's own partitioner, acks from all replicas)."""

    def __init__(self, redis, sink, staff: Staff):
        from streams.kafka.readside import Reader
        from streams.kafka.redis_store import ReadModel

        self.redis, self.sink, self.staff = redis, sink, staff
        self.reader = Reader(redis)
        self.model = ReadModel(redis)

    async def overview(self, tenant, days, month):
        return await self.reader.overview(tenant, days, month)

    async def labels(self, tenant):
        return await self.model.counts(tenant)

    async def open_count(self, tenant, kind):
        return await self.reader.open_count(tenant, kind)

    async def oldest_open(self, tenant, kind):
        return await self.reader.oldest_open(tenant, kind)

    async def cases(self, tenant, kind, status, limit=200):
        return await self.reader.cases(tenant, kind, status, limit)

    async def case(self, tenant, member, cycle):
        return await self.reader.case(tenant, member, cycle)

    async def acknowledged(self, tenant, keys):
        return await self.reader.acknowledged(tenant, keys)

    async def groups(self, tenant, now, limit=500):
        rows = await self.reader.groups(tenant, limit)
        for g in rows:  # the engine closes a check 23 h after its post even when we missed how
            if g["posted_at"] is not None and now - g["posted_at"] >= UNCONFIRMED_AFTER:
                g["posted_at"] = None
        return rows

    async def record_outcome(self, tenant, member, cycle, outcome, now, wall, login):
        row = await self.reader.case(tenant, member, cycle)
        if row is None or row["kind"] not in fx.ESCALATIONS or row["status"] != "open":
            return False
        # The engine's state is not here; its read-model label is (the worker's, streams/kafka/redis_store.py).
        # Escalated (or still "resent" for the half second before the worker's label reaches Redis):
        # the engine still holds the case open, so it must resolve it (that cycle only: the Resolve
        # names it). Blocked with no case held open (a 安否通知 resident who left): the engine has let
        # it go; it closes here.
        label = await self.redis.hget(self.model.keys(tenant)[0], member)
        phase = (label.decode() if isinstance(label, bytes) else label or "").rpartition(":")[2]
        resolve = outcome == rs.REACHED and phase in ("escalated", "resent")
        close_here = outcome == rs.EMERGENCY or (outcome == rs.REACHED and not resolve)
        if resolve:
            # First, so that a failure records nothing; a repeat (staff try again) is harmless: the
            # engine resolves only a cycle that is still escalated.
            from streams.line.webhook_events import Routed
            await self.sink.put(tenant, Routed(events=[Resolve(now, member, cycle)]))
        if not await self.reader.record_action(tenant, member, cycle, outcome, now, close_here):
            return False
        await self.staff.audit(tenant, wall, login, f"case.{outcome}", f"{member}:{cycle}")
        return True

    async def rollcalls(self, tenant, limit=50):
        return await self.reader.rollcalls(tenant, limit)

    async def rollcall_tally(self, tenant, rollcall):
        return await self.reader.rollcall_tally(tenant, rollcall)

    async def rollcall_members(self, tenant, rollcall, status, limit=5000):
        return await self.reader.rollcall_members(tenant, rollcall, status, limit)

    async def rollcall_curve(self, tenant, rollcall, until_minutes):
        return await self.reader.rollcall_curve(tenant, rollcall, until_minutes)

    async def clear_drill(self, tenant, rollcall):
        return await self.reader.clear_drill(tenant, rollcall)

    async def start_rollcall(self, tenant, rollcall, wall, login):
        from streams.line.webhook_events import Routed
        await self.sink.put(tenant, Routed(events=[rollcall]))   # first: a failure records nothing
        await self.staff.audit(tenant, wall, login, "rollcall.start", rollcall.id, rollcall_detail(rollcall))

    async def area_of(self, tenant, subject):
        from streams.kafka.readside import prefix
        raw = await self.redis.get(prefix(tenant) + "state:" + subject)
        return (False, None) if not raw else (True, codec.state_from_obj(codec.loads(raw)).settings.area)

    async def set_area(self, tenant, area, wall, login):
        from streams.line.webhook_events import Routed
        await self.sink.put(tenant, Routed(events=[area]))   # first: a failure records nothing
        await self.staff.audit(tenant, wall, login, "area.set", area.subject, area_detail(area))

    async def by_phone(self, tenant, phone):
        return await self.reader.by_phone(tenant, phone)

    async def held_about(self, tenant, member):
        from streams.kafka.readside import prefix
        p, redis = prefix(tenant), self.redis
        raw = await redis.get(f"{p}state:{member}")
        state = codec.state_from_obj(json.loads(raw)) if raw else None   # the phone: its last four digits
        cases = []
        for kind in fx.ESCALATIONS:
            for where in ("open", "closed"):
                for key in await redis.zrange(f"{p}{where}:{kind}", 0, -1):
                    case_member, _, cycle = key.decode().rpartition(":")
                    if case_member == member:
                        found = await self.reader.case(tenant, member, int(cycle))
                        if found is not None:
                            cases.append(found)
        history = [json.loads(v) for v in await redis.zrange(f"{p}hist:{member}", 0, -1)]
        rolls = []
        for rid in await redis.zrange(f"{p}rolls", 0, -1):
            status = await redis.hget(f"{p}roll:{rid.decode()}:st", member)
            if status is not None:
                said, area, sent = status.decode().split("|", 2)
                rolls.append({"rollcall": rid.decode(), "area": area, "status": said, "sent_at": int(sent)})
        return held(state, sorted(cases, key=lambda c: c["cycle"]), history, rolls)


def area_detail(area: SetArea) -> str:
    return f"area={area.area if area.area is not None else '-'}"


def rollcall_detail(rollcall: RollCall) -> str:
    """The audit row's detail of a roll-call staff started: its areas and whether it is a drill."""
    areas = ",".join(rollcall.areas) if rollcall.areas is not None else "all"
    return f"areas={areas}" + (" drill" if rollcall.drill else "")
