"""When a 気象庁 earthquake bulletin starts a tenant's roll-call (安否確認): a pure decision.

    on_bulletin(memory, settings, bulletin, now) -> (memory, actions)   a bulletin arrived
    release(memory, settings, now)               -> (memory, actions)   held roll-calls whose hold is over
    next_due(memory)                             -> when to call release next (epoch ms), or None

Like a GoAlert manager, each call is a function of (state, input, now) and nothing else: no clock,
no I/O, no randomness. `Memory` is one tenant's state, small and immutable, and goes to and from a
plain JSON-able dict (`Memory.to_obj`, `Memory.from_obj`). The actions are records for the shell:
`Start` (send this roll-call), `Hold` (it will start at `until` unless stopped; a Hold for an id
already held replaces the earlier one), `Cancel` (started=False: a held one never starts;
started=True: it went out already, reported for the audit) and `Skip` (why nothing happened, for
the audit; `areas`: the tenant's areas it is about, where it names some).

The contract:

1. The strength at one of the tenant's areas is the stronger of `bulletin.cities[area.city]` and
   `bulletin.areas[area.region]`; either may be missing, and an area with neither code is never hit.
   An area is hit when that strength's rank is at least the threshold's (`settings.threshold`).
2. Status 試験 (a test) never starts anything ("test"). 訓練 (a drill) starts a drill
   (RollCall.drill=True) only where the tenant opted in (`settings.drills`), else
   "drill_not_opted_in". Drills and real events are tracked apart: each has its own ids
   ("jma-drill-…" and "jma-…") and its own aftershock claims, so a drill never holds back a real
   roll-call, nor a real one a drill.
3. A 発表 or 訂正 that hits areas starts a roll-call for them: with `hold_ms` 0 a `Start` at once, at
   `now`; else a `Hold` until now + hold_ms, and `release` starts it, stamped with that instant (the
   outcome does not depend on how late release is called). Its id is f"jma-{event_id}" (drills
   f"jma-drill-{event_id}"), its areas the hit area ids in the tenant's own order, its
   resend_after the tenant's. A bulletin with no 震度 at all (VXSE52, a distant quake) is
   "no_intensity"; one with none at the tenant's areas "no_area"; one weaker there than the
   threshold "below_threshold".
4. One event never asks one area twice. A later bulletin of the same event (VXSE53 after VXSE51, a
   訂正, a higher serial) that hits new areas starts one more roll-call for the new areas only, id
   f"jma-{event_id}-2", "-3", …; while the event's roll-call is still held, the new areas join it
   instead (a new `Hold`, same id, same `until`). A bulletin that hits no new area does nothing
   ("already_started"). A later bulletin never takes an area out of a roll-call: people found near
   a strong quake once are asked; staff may stop a held one.
5. A 取消 of an event (its VXSE51 or VXSE53) cancels its held roll-call (Cancel started=False; it
   never starts, and its areas are free again should JMA issue the event anew after the 取消) and
   reports each started one once (Cancel started=True: people were already asked, staff decide).
   With neither it is "nothing_to_cancel". A 取消 of a VXSE52 withdraws only a hypocentre, which
   started nothing: it cancels nothing ("hypocenter_only"); JMA's sample series 32-35_06 withdraws
   its VXSE52 and goes on with VXSE53 of the same quake. A 発表 or 訂正 of a cancelled event issued
   no later than the 取消 (report time, or a VXSE53 serial up to the 取消's) is "cancelled".
6. Aftershocks: within 6 h of a roll-call of a DIFFERENT event in an area (started there, or held:
   counted from its start), a bulletin starts one there only if it is stronger there than that
   roll-call's strength (rank strictly greater; the strength is the strongest any bulletin of that
   event gave the area). The areas left out are reported (Skip "weaker_aftershock" with them); when
   none remain nothing starts. An area is free again 6 h after the roll-call started. A stronger
   quake takes the area over from another event's roll-call still held, so nobody gets two cards
   minutes apart: that one is held again without it, or cancelled (Cancel started=False) when
   nothing is left, with Skip "superseded" naming the areas it lost.
7. Order: a bulletin of an event reported before the latest one applied for that event, or a
   VXSE53 whose serial is lower than one applied, arrived out of order and changes nothing
   ("out_of_order"). A bulletin reported more than 24 h before `now` is "stale".

Each call first forgets what can no longer matter: an event 24 h after its latest bulletin (an
older bulletin of it is stale by rule 7; JMA's bulletins of one quake come hours apart, not a day),
a claim once its 6 h are over. A held roll-call is kept until it starts or is cancelled. Before a
bulletin, the held roll-calls due strictly before `now` start; a tie goes to the bulletin, so a 取消
at the very instant a hold ends still stops it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, NamedTuple, Protocol

from agents.clock import DAY, HOUR
from schemas.events import RESEND_AFTER_DEFAULT, RollCall
from streams.jma.bulletin import Bulletin, parse_threshold, rank

AFTERSHOCK_WINDOW = 6 * HOUR
STALE_AFTER = DAY
FORGET_AFTER = DAY

NORMAL, DRILL, TEST = "通常", "訓練", "試験"
CANCEL = "取消"
HYPOCENTER_KIND = "VXSE52"   # 震源に関する情報: a hypocentre, never a 震度

# Skip reasons
S_TEST = "test"
S_DRILL_NOT_OPTED_IN = "drill_not_opted_in"
S_STALE = "stale"
S_OUT_OF_ORDER = "out_of_order"
S_NO_INTENSITY = "no_intensity"
S_NO_AREA = "no_area"
S_BELOW_THRESHOLD = "below_threshold"
S_ALREADY_STARTED = "already_started"
S_WEAKER_AFTERSHOCK = "weaker_aftershock"
S_SUPERSEDED = "superseded"
S_CANCELLED = "cancelled"
S_HYPOCENTER_ONLY = "hypocenter_only"
S_NOTHING_TO_CANCEL = "nothing_to_cancel"


class AreaLike(Protocol):
    """What the decision reads of a tenant's area (schemas.areas.Area is one)."""
    id: str
    city: str | None     # JMA 市町村等 code, 7 digits
    region: str | None   # JMA 細分区域 code, 3 digits


@dataclass(frozen=True, slots=True)
class QuakeSettings:
    """One tenant's rule for starting roll-calls from the 気象庁 feed."""
    tenant: str
    areas: tuple[AreaLike, ...]
    threshold: str = "5-"          # canonical 震度; "5弱", "震度５弱以上" are read as "5-"
    hold_ms: int = 0               # a roll-call waits this long so staff can stop it; 0: at once
    drills: bool = False           # 訓練 bulletins start drills only where the tenant opted in
    resend_after: int = RESEND_AFTER_DEFAULT

    def __post_init__(self):
        object.__setattr__(self, "threshold", parse_threshold(self.threshold))
        object.__setattr__(self, "areas", tuple(self.areas))
        if self.hold_ms < 0:
            raise ValueError(f"hold_ms must be 0 or more, not {self.hold_ms}")
        if self.resend_after <= 0:
            raise ValueError(f"resend_after must be a delay, not {self.resend_after}")


# --- the memory ----------------------------------------------------------------------------------


class EventMemo(NamedTuple):
    """What the tenant did about one event (drills apart: their `key` differs)."""
    key: str                          # the event's first roll-call id: "jma-<EventID>" / "jma-drill-<EventID>"
    event_id: str
    drill: bool
    latest: int                       # report_at_ms of the latest bulletin applied
    serial: int | None = None         # the highest VXSE53 serial applied
    areas: tuple[str, ...] = ()       # the areas the event has asked (started or held): never again
    calls: int = 0                    # roll-calls made (started, held or cancelled): ids are never reused
    started: tuple[str, ...] = ()     # ids that went out
    reported: tuple[str, ...] = ()    # of those, the ones a 取消 already reported
    cancelled_at: int | None = None   # report_at_ms of the event's 取消
    cancelled_serial: int | None = None


class Held(NamedTuple):
    """A roll-call waiting for its hold to end; `rollcall.at` is when it starts."""
    key: str
    rollcall: RollCall


class Claim(NamedTuple):
    """A roll-call in an area, for the aftershock rule: its strength there and when it started (or will)."""
    area: str
    drill: bool
    key: str          # the event's key
    rollcall: str     # the roll-call's id
    shindo: str
    at: int


@dataclass(frozen=True, slots=True)
class Memory:
    events: tuple[EventMemo, ...] = ()
    held: tuple[Held, ...] = ()
    claims: tuple[Claim, ...] = ()

    def to_obj(self) -> dict:
        """A plain dict of lists, str, int, bool and None: json.dumps takes it as is."""
        return {"events": [_listed(memo._asdict()) for memo in self.events],
                "held": [{"key": h.key, "rollcall": _rollcall_obj(h.rollcall)} for h in self.held],
                "claims": [claim._asdict() for claim in self.claims]}

    @classmethod
    def from_obj(cls, obj: dict) -> Memory:
        return cls(events=tuple(EventMemo(**_tupled(memo)) for memo in obj.get("events", ())),
                   held=tuple(Held(h["key"], _rollcall(h["rollcall"])) for h in obj.get("held", ())),
                   claims=tuple(Claim(**claim) for claim in obj.get("claims", ())))


def _listed(record: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in record.items()}


def _tupled(record: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}


def _rollcall_obj(rc: RollCall) -> dict:
    return {"at": rc.at, "id": rc.id, "areas": None if rc.areas is None else list(rc.areas),
            "drill": rc.drill, "resend_after": rc.resend_after}


def _rollcall(obj: dict) -> RollCall:
    areas = obj.get("areas")
    return RollCall(at=obj["at"], id=obj["id"], areas=None if areas is None else tuple(areas),
                    drill=obj.get("drill", False), resend_after=obj.get("resend_after", RESEND_AFTER_DEFAULT))


# --- the actions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    rollcall: RollCall


@dataclass(frozen=True, slots=True)
class Hold:
    rollcall: RollCall   # rollcall.at == until
    until: int


@dataclass(frozen=True, slots=True)
class Cancel:
    rollcall_id: str
    started: bool        # True: it had gone out already; reported, not undone


@dataclass(frozen=True, slots=True)
class Skip:
    event_id: str
    reason: str
    areas: tuple[str, ...] = ()


Action = Start | Hold | Cancel | Skip


# --- the decision --------------------------------------------------------------------------------


def on_bulletin(memory: Memory, settings: QuakeSettings, bulletin: Bulletin,
                now: int) -> tuple[Memory, list[Action]]:
    actions: list[Action] = []
    memory = _forget(_start_due(memory, now, False, actions), now)
    return _apply(memory, settings, bulletin, now, actions), actions


def release(memory: Memory, settings: QuakeSettings, now: int) -> tuple[Memory, list[Action]]:
    """The held roll-calls due at or before `now` start, each stamped with its own due instant.
    (`settings` is taken for symmetry with on_bulletin: a held roll-call already carries all it needs.)"""
    actions: list[Action] = []
    return _forget(_start_due(memory, now, True, actions), now), actions


def next_due(memory: Memory) -> int | None:
    return min((h.rollcall.at for h in memory.held), default=None)


def strength(area: AreaLike, bulletin: Bulletin) -> str | None:
    """Rule 1: the stronger of the area's city and 細分区域 in the bulletin; None when it names neither."""
    found = [shindo for shindo in (bulletin.cities.get(area.city) if area.city else None,
                                   bulletin.areas.get(area.region) if area.region else None) if shindo]
    return max(found, key=rank, default=None)


def _apply(memory: Memory, settings: QuakeSettings, b: Bulletin, now: int, actions: list[Action]) -> Memory:
    def skip(reason: str, areas: Iterable[str] = ()) -> Memory:
        actions.append(Skip(b.event_id, reason, tuple(areas)))
        return memory

    if b.status == TEST:
        return skip(S_TEST)
    drill = b.status == DRILL
    if drill and not settings.drills:
        return skip(S_DRILL_NOT_OPTED_IN)
    if now - b.report_at_ms > STALE_AFTER:
        return skip(S_STALE)
    if b.kind == HYPOCENTER_KIND:   # never a 震度, so nothing it says or withdraws can start or stop a roll-call
        return skip(S_HYPOCENTER_ONLY if b.info_type == CANCEL else S_NO_INTENSITY)
    key = _key(b.event_id, drill)
    memo = _memo(memory, key)
    if memo is not None and _out_of_order(memo, b):
        return skip(S_OUT_OF_ORDER)
    memo = _seen(memo or EventMemo(key, b.event_id, drill, b.report_at_ms), b)
    if b.info_type == CANCEL:
        return _cancel(memory, memo, b, actions)
    if _before_cancel(memo, b):
        return skip(S_CANCELLED)
    return _announce(memory, settings, memo, b, now, actions)


def _announce(memory: Memory, settings: QuakeSettings, memo: EventMemo, b: Bulletin, now: int,
              actions: list[Action]) -> Memory:
    """A 発表 or 訂正 (rules 1, 3, 4, 6). The event is remembered even when it asks nobody, so that an
    older bulletin of it arriving late is known to be out of order."""
    memory = _put(memory, memo)
    felt = [(area.id, s) for area in settings.areas if (s := strength(area, b)) is not None]
    hit = [(area, s) for area, s in felt if rank(s) >= rank(settings.threshold)]
    reason = (S_NO_INTENSITY if not b.areas and not b.cities else S_NO_AREA if not felt
              else S_BELOW_THRESHOLD if not hit else None)
    if reason:
        actions.append(Skip(b.event_id, reason))
        return memory
    memory = _strengthen(memory, memo.key, hit)
    new = [(area, s) for area, s in hit if area not in memo.areas]
    if not new:
        actions.append(Skip(b.event_id, S_ALREADY_STARTED))
        return memory
    weaker = [area for area, s in new if _outranked(memory.claims, memo, area, s, now)]
    if weaker:
        actions.append(Skip(b.event_id, S_WEAKER_AFTERSHOCK, tuple(weaker)))
    kept = [(area, s) for area, s in new if area not in weaker]
    if not kept:
        return memory
    memory = _take_over(memory, memo, {area for area, _ in kept}, actions)
    return _ask(memory, settings, memo, kept, now, actions)


def _ask(memory: Memory, settings: QuakeSettings, memo: EventMemo, kept: list[tuple[str, str]], now: int,
         actions: list[Action]) -> Memory:
    """The event asks `kept` (area, strength): into its held roll-call if it has one, else a new one."""
    held = _held(memory, memo.key)
    ids = [area for area, _ in kept]
    if held is not None:
        rc = replace(held.rollcall, areas=_in_order(settings, (*held.rollcall.areas, *ids)))
        actions.append(Hold(rc, rc.at))
        memory = replace(memory, held=tuple(Held(h.key, rc) if h is held else h for h in memory.held))
    else:
        calls = memo.calls + 1
        rc = RollCall(at=now + settings.hold_ms, id=memo.key if calls == 1 else f"{memo.key}-{calls}",
                      areas=_in_order(settings, ids), drill=memo.drill, resend_after=settings.resend_after)
        memo = memo._replace(calls=calls)
        if settings.hold_ms:
            actions.append(Hold(rc, rc.at))
            memory = replace(memory, held=(*memory.held, Held(memo.key, rc)))
        else:
            actions.append(Start(rc))
            memo = memo._replace(started=(*memo.started, rc.id))
    claims = tuple(Claim(area, memo.drill, memo.key, rc.id, s, rc.at) for area, s in kept)
    memory = replace(memory, claims=(*memory.claims, *claims))
    return _put(memory, memo._replace(areas=(*memo.areas, *ids)))


def _cancel(memory: Memory, memo: EventMemo, b: Bulletin, actions: list[Action]) -> Memory:
    """Rule 5: the held roll-call never starts; the started ones are reported, once each."""
    memo = memo._replace(cancelled_at=b.report_at_ms, cancelled_serial=_max(memo.cancelled_serial, b.serial))
    before = len(actions)
    held = _held(memory, memo.key)
    if held is not None:
        rc = held.rollcall
        actions.append(Cancel(rc.id, started=False))
        memory = replace(memory, held=tuple(h for h in memory.held if h is not held),
                         claims=tuple(c for c in memory.claims if c.rollcall != rc.id))
        memo = memo._replace(areas=tuple(a for a in memo.areas if a not in rc.areas))
    fresh = [rid for rid in memo.started if rid not in memo.reported]
    actions.extend(Cancel(rid, started=True) for rid in fresh)
    memo = memo._replace(reported=(*memo.reported, *fresh))
    if len(actions) == before:
        actions.append(Skip(b.event_id, S_NOTHING_TO_CANCEL))
    return _put(memory, memo)


def _take_over(memory: Memory, memo: EventMemo, areas: set[str], actions: list[Action]) -> Memory:
    """Rule 6: a stronger quake's areas leave the roll-calls of other events still held there."""
    held: list[Held] = []
    for h in memory.held:
        lost = [a for a in h.rollcall.areas if a in areas]
        if h.key == memo.key or h.rollcall.drill != memo.drill or not lost:
            held.append(h)
            continue
        other = _memo(memory, h.key)
        actions.append(Skip(other.event_id if other else h.key, S_SUPERSEDED, tuple(lost)))
        left = tuple(a for a in h.rollcall.areas if a not in areas)
        if left:
            rc = replace(h.rollcall, areas=left)
            actions.append(Hold(rc, rc.at))
            held.append(Held(h.key, rc))
        else:
            actions.append(Cancel(h.rollcall.id, started=False))
        memory = replace(memory, claims=tuple(c for c in memory.claims
                                              if not (c.rollcall == h.rollcall.id and c.area in areas)))
    return replace(memory, held=tuple(held))


def _start_due(memory: Memory, now: int, inclusive: bool, actions: list[Action]) -> Memory:
    due = sorted((h for h in memory.held if h.rollcall.at < now or (inclusive and h.rollcall.at == now)),
                 key=lambda h: (h.rollcall.at, h.rollcall.id))
    for h in due:
        actions.append(Start(h.rollcall))
        memo = _memo(memory, h.key)
        memory = replace(memory, held=tuple(x for x in memory.held if x is not h))
        memory = _put(memory, memo._replace(started=(*memo.started, h.rollcall.id)))
    return memory


def _forget(memory: Memory, now: int) -> Memory:
    waiting = {h.key for h in memory.held}
    events = tuple(m for m in memory.events if now - m.latest <= FORGET_AFTER or m.key in waiting)
    claims = tuple(c for c in memory.claims if now - c.at < AFTERSHOCK_WINDOW)
    if len(events) == len(memory.events) and len(claims) == len(memory.claims):
        return memory
    return replace(memory, events=events, claims=claims)


# --- small pieces --------------------------------------------------------------------------------


def _key(event_id: str, drill: bool) -> str:
    return f"jma-drill-{event_id}" if drill else f"jma-{event_id}"


def _memo(memory: Memory, key: str) -> EventMemo | None:
    return next((m for m in memory.events if m.key == key), None)


def _put(memory: Memory, memo: EventMemo) -> Memory:
    """`memo` in place of the event's entry (appended when new): the order stays the order events came."""
    if any(m.key == memo.key for m in memory.events):
        return replace(memory, events=tuple(memo if m.key == memo.key else m for m in memory.events))
    return replace(memory, events=(*memory.events, memo))


def _held(memory: Memory, key: str) -> Held | None:
    return next((h for h in memory.held if h.key == key), None)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _seen(memo: EventMemo, b: Bulletin) -> EventMemo:
    return memo._replace(latest=max(memo.latest, b.report_at_ms), serial=_max(memo.serial, b.serial))


def _out_of_order(memo: EventMemo, b: Bulletin) -> bool:
    """Rule 7. Ties pass: JMA's report times are whole minutes, and a repeat can only add areas."""
    older_serial = b.serial is not None and memo.serial is not None and b.serial < memo.serial
    return b.report_at_ms < memo.latest or older_serial


def _before_cancel(memo: EventMemo, b: Bulletin) -> bool:
    """Rule 5: a 発表 or 訂正 that the event's 取消 withdrew (one issued after it is JMA issuing anew)."""
    if memo.cancelled_at is None:
        return False
    withdrawn = b.serial is not None and memo.cancelled_serial is not None and b.serial <= memo.cancelled_serial
    return b.report_at_ms <= memo.cancelled_at or withdrawn


def _strengthen(memory: Memory, key: str, hit: list[tuple[str, str]]) -> Memory:
    """A later bulletin of the event found an area it asked stronger: its claim there says so (rule 6
    compares with the strongest the event was known to be)."""
    stronger = dict(hit)
    claims = tuple(c._replace(shindo=stronger[c.area])
                   if c.key == key and c.area in stronger and rank(stronger[c.area]) > rank(c.shindo) else c
                   for c in memory.claims)
    return memory if claims == memory.claims else replace(memory, claims=claims)


def _outranked(claims: tuple[Claim, ...], memo: EventMemo, area: str, shindo: str, now: int) -> bool:
    """Rule 6: another event's roll-call in `area` within its 6 h is at least as strong as `shindo`."""
    rivals = [rank(c.shindo) for c in claims
              if c.area == area and c.drill == memo.drill and c.key != memo.key and now - c.at < AFTERSHOCK_WINDOW]
    return bool(rivals) and rank(shindo) <= max(rivals)


def _in_order(settings: QuakeSettings, ids: Iterable[str]) -> tuple[str, ...]:
    """The tenant's own order; an id the tenant no longer lists (settings changed mid-hold) goes last."""
    position = {area.id: n for n, area in enumerate(settings.areas)}
    return tuple(sorted(dict.fromkeys(ids), key=lambda a: position.get(a, len(position))))
