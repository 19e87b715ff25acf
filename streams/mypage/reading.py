"""What My Page reads from the embedded store: one member's state and one member's recent effects.

Never a scan of the tenant: the state is one row of `states` (by primary key) plus that member's
inbox rows the engine has not applied yet, and the history goes through an index on the effect's
subject that this module adds to the store's `effects` table.

The pending rows matter: a change made on My Page waits in the inbox until the engine's next step
(half a second in `anpi serve`). Stepping them here with the same pure core shows the resident
what they just changed, and a second change builds on the first instead of undoing it.
"""
from __future__ import annotations

import json
import sqlite3

from agents import subject
from agents.member import MemberState
from schemas.effects import Effect
from streams import codec
from streams.embedded.store import Store

SCHEMA = """
CREATE INDEX IF NOT EXISTS mypage_effects_by_subject
    ON effects (tenant, json_extract(effect, '$.subject'), at);
"""
HISTORY_QUERY = ("SELECT effect FROM effects WHERE tenant = ? AND json_extract(effect, '$.subject') = ? "
                 "AND at >= ? AND at <= ? ORDER BY at DESC, seq DESC LIMIT ?")
HISTORY_LIMIT = 300   # a month of the busiest ladder is far fewer


def install(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)


def member_state(store: Store, tenant: str, member: str) -> MemberState | None:
    """The member's state as the engine will have it once it has applied the inbox: None for someone
    not registered (or for a group's id)."""
    db = store.db
    row = db.execute("SELECT state FROM states WHERE tenant = ? AND subject = ?", (tenant, member)).fetchone()
    state = codec.state_from_obj(json.loads(row[0])) if row else None
    applied, _ = store.cursor(tenant)
    for (raw,) in db.execute("SELECT event FROM inbox WHERE tenant = ? AND seq > ? AND subject = ? ORDER BY seq",
                             (tenant, applied, member)):
        try:
            state, _ = subject.step(state, codec.event_from_obj(json.loads(raw)), member)
        except Exception:  # a row the engine will set aside (streams/quarantine.py): it changes nothing
            continue
    return state if type(state) is MemberState else None


def history(db: sqlite3.Connection, tenant: str, member: str, since: int, until: int) -> list[Effect]:
    """The member's own effects (subject = member) in [since, until], newest first."""
    rows = db.execute(HISTORY_QUERY, (tenant, member, since, until, HISTORY_LIMIT)).fetchall()
    return [codec.effect_from_obj(json.loads(raw)) for (raw,) in rows]
