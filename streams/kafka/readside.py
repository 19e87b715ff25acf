"""The admin screen's read side in Redis, for the Kafka runtime: what the embedded store keeps in its
rs_* tables (streams/embedded/readside.py), kept here from the effects topic by `anpi readside`
(streams/kafka/readside_app.py). What changes for an effect is decided by the pure agents/readside.py;
this module turns it into small operations and applies them in Redis, exactly once.

Exactly once over an at-least-once reader. The consumer reads `<prefix>-effects`,
`<prefix>-escalations` and the states' changelog (read_committed) and applies each partition's
batch with ONE Lua script that also stores the offset of the last record it applied for that (topic, partition), in the same
script, so a change and the offset that says it is done are never apart. A record at or below the
stored offset changes nothing: a replay from the beginning, a restart between the write and a Kafka
commit, or two consumers on the same partition for a while cannot count twice. (The alternative, a
marker per effect id with a TTL, costs a key per effect — tens of millions for a large tenant — and
double counts a replay older than the TTL; the offsets cost one hash field per partition.)

Keys: every key of a tenant starts `anpi:{tenant}:`, with the tenant in braces, so that on a Redis
Cluster they all hash to one slot and one script may touch them all. Values and keys hold opaque ids
(LINE userIds and groupIds), labels, counts and times: no names, and the phone number only in the
case hash of a staff call (closed cases expire after CLOSED_DAYS).

    anpi:{t}:rs:offsets              hash "effects:<p>" / "escalations:<p>" -> last applied offset
    anpi:{t}:rs:daily:<day>          hash kind -> n (local day in the tenant's zone; "answered" too)
    anpi:{t}:rs:sent:<member>        "cycle|day|at" of the member's last check (TTL SENT_DAYS): an OK
                                     counts as answered on the day its cycle's check went out
    anpi:{t}:rs:case:<member>:<cycle>  hash: member cycle kind at told status last_action
                                     last_action_at closed_at outcome sent_at reason reminders
                                     reminded_at urgent [phone]
    anpi:{t}:rs:open:<kind>          zset "<member>:<cycle>" by urgency: escalation time, less
                                     URGENT_FIRST once the resident asked for help (those on top,
                                     then the oldest)
    anpi:{t}:rs:closed:<kind>        zset "<member>:<cycle>" by closing time (the last CLOSED_KEEP)
    anpi:{t}:rs:mopen:<member>       set of the member's open case cycles (CloseCase closes them all)
    anpi:{t}:rs:acks:<member>:<cycle>  hash contact -> when they answered 「見に行きます」
    anpi:{t}:rs:groups               zset of group ids (score 0: listed in id order)
    anpi:{t}:rs:group:<group>        hash: cycle posted_at confirmed roster unconfirmed_at unconfirmed
    anpi:{t}:rs:usage:<month>        messages that count against LINE's monthly quota (an estimate)
    anpi:{t}:rs:state:<subject>      the subject's state, as the changelog has it but for the phone
                                     number (kept_phone: its last four digits): My Page
    anpi:{t}:rs:phone:<blind>        set of the members with that phone number (a blind index entry,
                                     streams/sealed.py; anpi:{t}:rs:phoneof:<member> its entry)
    anpi:{t}:rs:hist:<member>        zset: the member's own effects (as the effects topic has them) by
                                     time, the last HISTORY_DAYS, at most HISTORY_KEEP (My Page)
    anpi:{t}:rs:rolls                zset roll-call id by when it went out (its first card)
    anpi:{t}:rs:roll:<id>            hash: drill, at, and "<status>|<area>" -> members (the tally)
    anpi:{t}:rs:roll:<id>:st         hash member -> "<status>|<area>|<sent at>": each member's one status
    anpi:{t}:rs:roll:<id>:<status>:<area>  zset of the members waiting / listed in an area (by when
                                     sent), and anpi:{t}:rs:roll:<id>:need_help (by when they asked)
    anpi:{t}:rs:roll:<id>:curve      hash minute after it went out -> answers that minute
                                     (a roll-call's tally and curve expire after DAILY_DAYS, its
                                     members' statuses and lists after CLOSED_DAYS)

Members by service and state are the worker's own read model (streams/kafka/redis_store.py, `anpi:<t>:counts`).

What the effects do not say, and how it is approximated here:
  - days are counted in the tenant's zone (ANPI_TIMEZONE), not each member's schedule zone;
  - a group's roster is learned from its 23 h list (confirmed + unconfirmed); before the first list
    it is unknown (shown as —) and a group message is billed as 1;
  - usage counts a LINE-bound effect when it is committed, not when the sender delivered it.
"""
from __future__ import annotations

import json
from collections.abc import Iterable

import redis.asyncio as aioredis

from agents import readside as rs
from schemas import effects as fx
from schemas.settings import PHONE_KEPT, kept_phone
from streams.sealed import keyring, unseal
from schemas.tenant import ID as _TENANT
from schemas.tenant import ID_RULE
from streams import codec

SENT_DAYS = 40        # how long a check's day is kept for the OK that may answer it
DAILY_DAYS = 400      # daily counts (the chart shows 30 days)
CLOSED_DAYS = 90      # a closed case (with the phone of a staff call) is forgotten after this
CLOSED_KEEP = 1000    # closed cases listed per kind (the page shows the last 20)
PENDING_PHONE_DAYS = 7  # a phone read before its case: kept this long for the case to open
DAY_MS = 86_400_000
URGENT_FIRST = 10 ** 13   # ms (over 300 years): what an urgent case's score in an open zset is brought forward by


HISTORY_DAYS = 31     # a member's own effects, for My Page (it shows 30 days)
HISTORY_KEEP = 300    # and at most this many of them (streams/mypage/reading.HISTORY_LIMIT)

EFFECTS, ESCALATIONS, STATES = "effects", "escalations", "states"   # STATES: the changelog topic


def prefix(tenant: str) -> str:
    if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
        raise ValueError(f"tenant id {tenant!r}: expected " + ID_RULE)
    return f"anpi:{{{tenant}}}:rs:"


# --- from records to operations (pure) ---------------------------------------------------------------


def effect_ops(effect, zone: str) -> list[list]:
    """The operations one effect of the effects topic makes, in order; [] for kinds not counted."""
    ops: list[list] = []
    for change in rs.effect_changes(effect, zone):
        kind = type(change)
        if kind is rs.Count:
            ops.append(["n", change.day, change.kind, change.n])
        elif kind is rs.Answered:
            ops.append(["ans", change.member, change.cycle])
        elif kind is rs.OpenCase:
            ops.append(["open", change.member, change.cycle, change.kind, change.at, change.told, change.reason or ""])
        elif kind is rs.Urgent:
            ops.append(["urgent", change.member, change.cycle])
        elif kind is rs.Reminded:
            ops.append(["remind", change.member, change.cycle, change.n, change.at])
        elif kind is rs.CloseCase:
            ops.append(["close", change.member, change.at])
        elif kind is rs.Acknowledged:
            ops.append(["ack", change.member, change.cycle, change.contact, change.at])
        elif kind is rs.Forget:
            ops.append(["forget", change.member])
        elif kind is rs.RollSent:
            ops.append(["rsent", change.rollcall, change.member, change.area or rs.NO_AREA, int(change.drill), change.at])
        elif kind is rs.RollAnswer:
            ops.append(["rans", change.rollcall, change.member, change.answer, change.at])
        elif kind is rs.RollListed:
            ops.append(["rlist", change.rollcall, change.member, change.at])
    kind = effect.effect
    if kind == fx.CHECK_SENT and effect.cycle is not None:
        ops.append(["sent", effect.subject, effect.cycle, rs.day_of(effect.at, zone), effect.at])
    elif kind == fx.GROUP_CHECK_POSTED and effect.cycle is not None:
        ops.append(["gpost", effect.subject, effect.cycle, effect.at])
    elif kind == fx.GROUP_CONFIRMED and effect.cycle is not None:
        ops.append(["gconf", effect.subject, effect.cycle])
    elif kind == fx.GROUP_UNCONFIRMED and effect.cycle is not None:
        ops.append(["gunc", effect.subject, effect.cycle, effect.at, len(effect.members or ())])
    if kind in (fx.GROUP_CHECK_POSTED, fx.GROUP_UNCONFIRMED):
        ops.append(["guse", rs.month_of(effect.at), effect.subject])  # the group's size is in Redis
    else:
        n = rs.billed(effect, 0)
        if n:
            ops.append(["use", rs.month_of(effect.at), n])
    return ops


def escalation_ops(obj: dict) -> list[list]:
    """From a record of the escalations topic: only the phone of a staff call (for the call queue)."""
    if obj.get("effect") == fx.STAFF_CALL and obj.get("phone") and obj.get("cycle") is not None:
        return [["phone", obj["subject"], obj["cycle"], str(obj["phone"])]]
    return []


def history_ops(obj: dict) -> list[list]:
    """A member's own effect that My Page tells them of, kept (as the topic has it) by its time."""
    if obj.get("effect") in rs.MEMBER_HISTORY and isinstance(obj.get("at"), int) and obj.get("subject"):
        kept = {k: v for k, v in obj.items() if k != "tenant"}
        return [["hist", obj["subject"], obj["at"], json.dumps(kept, ensure_ascii=False, separators=(",", ":"))]]
    return []


def state_ops(subject: str, value: bytes | None) -> list[list]:
    """A subject's state from the changelog ("" once it is gone), for My Page, with a member's phone
    number replaced by PHONE_KEPT: the number stays in the changelog (and a staff call's case)."""
    if value is None:
        return [["state", subject, ""], ["pix", subject, ""]]
    try:
        obj = codec.loads(value)
        blind = ""
        if isinstance(obj, list) and obj and obj[0] == "m" and isinstance(obj[1], dict) and obj[1].get("phone"):
            phone = unseal(obj[1]["phone"])
            blind = keyring().phone_blind(phone) if not phone.startswith(PHONE_KEPT) else ""
            obj[1]["phone"] = kept_phone(phone)
        return [["state", subject, json.dumps(obj, ensure_ascii=False, separators=(",", ":"))], ["pix", subject, blind]]
    except (ValueError, IndexError, TypeError):   # not a state this read side can read: nothing
        return []


def record_ops(topic_kind: str, value, zone: str) -> list[list]:
    """The operations of one raw record; [] for markers (flush, batch_end) and unreadable records.
    A STATES record's value is (subject, state bytes or None)."""
    if topic_kind == STATES:
        return state_ops(*value)
    try:
        obj = codec.loads(value)
        if not isinstance(obj, dict) or "effect" not in obj:
            return []
        if topic_kind == ESCALATIONS:
            return escalation_ops(obj)
        return effect_ops(codec.effect_from_obj(obj), zone) + history_ops(obj)
    except (ValueError, KeyError, TypeError):  # a record this read side cannot read: counted as nothing
        return []


# --- applying them (one script per partition batch) -----------------------------------------------------

# KEYS[1] = the offsets hash; ARGV[1] = the key prefix, ARGV[2] = the offsets field ("effects:3"),
# ARGV[3] = the batch's last offset, ARGV[4] = JSON [[offset, op, args...], ...] in offset order.
# Every key touched starts with ARGV[1] (one tenant, one hash slot). Returns how many ops applied.
_APPLY = """
local p, field, last = ARGV[1], ARGV[2], tonumber(ARGV[3])
local done = tonumber(redis.call('HGET', KEYS[1], field) or '-1')
if last <= done then return 0 end
local ops = cjson.decode(ARGV[4])
local SENT_MS, DAILY_MS, CLOSED_MS, PENDING_MS, KEEP = %(sent)d, %(daily)d, %(closed)d, %(pending)d, %(keep)d
local HIST_MS, HIST_KEEP = %(hist)d, %(hist_keep)d
local applied = 0

-- a member's roll-call status moves: the tally, the lists (waiting / listed by area, need_help)
local function roll_move(r, member, from, to, area, at)
  if from then
    redis.call('HINCRBY', r, from .. '|' .. area, -1)
    if from == 'need_help' then redis.call('ZREM', r .. ':need_help', member)
    elseif from ~= 'safe' then redis.call('ZREM', r .. ':' .. from .. ':' .. area, member) end
  end
  redis.call('HINCRBY', r, to .. '|' .. area, 1)
  local list = nil
  if to == 'need_help' then list = r .. ':need_help' elseif to ~= 'safe' then list = r .. ':' .. to .. ':' .. area end
  if list then
    redis.call('ZADD', list, at, member)
    redis.call('PEXPIRE', list, CLOSED_MS)  -- who is on which list: forgotten as a closed case is
  end
end

local function close_case(key, id, kind, at, outcome)
  redis.call('HSET', key, 'status', 'closed', 'closed_at', at, 'outcome', outcome)
  redis.call('ZREM', p .. 'open:' .. kind, id)
  redis.call('ZADD', p .. 'closed:' .. kind, at, id)
  redis.call('ZREMRANGEBYRANK', p .. 'closed:' .. kind, 0, -KEEP - 1)
  redis.call('PEXPIRE', key, CLOSED_MS)
end

for _, op in ipairs(ops) do
  if op[1] > done then
    local name = op[2]
    applied = applied + 1
    if name == 'n' then
      local key = p .. 'daily:' .. op[3]
      redis.call('HINCRBY', key, op[4], op[5])
      redis.call('PEXPIRE', key, DAILY_MS)
    elseif name == 'sent' then
      redis.call('SET', p .. 'sent:' .. op[3], op[4] .. '|' .. op[5] .. '|' .. op[6], 'PX', SENT_MS)
    elseif name == 'ans' then
      local v = redis.call('GET', p .. 'sent:' .. op[3])
      if v then
        local cycle, day = string.match(v, '^([^|]*)|([^|]*)|')
        if tonumber(cycle) == op[4] then
          local key = p .. 'daily:' .. day
          redis.call('HINCRBY', key, 'answered', 1)
          redis.call('PEXPIRE', key, DAILY_MS)
        end
      end
    elseif name == 'open' then
      local member, cycle, kind, at, told, reason = op[3], op[4], op[5], op[6], op[7], op[8] or ''
      local id = member .. ':' .. cycle
      local key = p .. 'case:' .. id
      local f = redis.call('HMGET', key, 'kind', 'status', 'at', 'urgent')
      if f[1] and f[2] == 'open' and f[1] ~= kind and kind == 'staff_call' then
        -- a staff call on a cycle that told contacts: the case goes to the call queue, as urgent as it was
        local since = tonumber(f[3])
        redis.call('ZREM', p .. 'open:' .. f[1], id)
        redis.call('ZADD', p .. 'open:' .. kind, (f[4] == '1') and (since - %(urgent)d) or since, id)
        redis.call('HSET', key, 'kind', kind, 'reason', reason)
      elseif not f[1] then
        local sent_at = ''
        local v = redis.call('GET', p .. 'sent:' .. member)
        if v then
          local c, d, a = string.match(v, '^([^|]*)|([^|]*)|(.*)$')
          if tonumber(c) == cycle then sent_at = a end
        end
        redis.call('HSET', key, 'member', member, 'cycle', cycle, 'kind', kind, 'at', at, 'told', told,
                   'status', 'open', 'sent_at', sent_at, 'reason', reason, 'reminders', 0, 'urgent', 0)
        redis.call('PERSIST', key)
        redis.call('ZADD', p .. 'open:' .. kind, at, id)
        redis.call('SADD', p .. 'mopen:' .. member, cycle)
      end
    elseif name == 'close' then
      local member, at = op[3], op[4]
      local mkey = p .. 'mopen:' .. member
      for _, cycle in ipairs(redis.call('SMEMBERS', mkey)) do
        local id = member .. ':' .. cycle
        local key = p .. 'case:' .. id
        local f = redis.call('HMGET', key, 'status', 'kind', 'last_action')
        if f[1] == 'open' then
          close_case(key, id, f[2], at, (f[3] == 'reached') and 'reached' or 'resident')
        end
      end
      redis.call('DEL', mkey)
    elseif name == 'urgent' then
      local id = op[3] .. ':' .. op[4]
      local key = p .. 'case:' .. id
      local f = redis.call('HMGET', key, 'kind', 'status', 'at', 'urgent')
      if f[2] == 'open' and f[4] ~= '1' then
        redis.call('HSET', key, 'urgent', 1)
        redis.call('ZADD', p .. 'open:' .. f[1], 'XX', tonumber(f[3]) - %(urgent)d, id)
      end
    elseif name == 'remind' then
      local key = p .. 'case:' .. op[3] .. ':' .. op[4]
      local f = redis.call('HMGET', key, 'status', 'reminders')
      if f[1] == 'open' and tonumber(f[2] or '0') < op[5] then
        redis.call('HSET', key, 'reminders', op[5], 'reminded_at', op[6])
      end
    elseif name == 'ack' then
      local key = p .. 'acks:' .. op[3] .. ':' .. op[4]
      redis.call('HSETNX', key, op[5], op[6])
      redis.call('PEXPIRE', key, CLOSED_MS)
    elseif name == 'state' then
      if op[4] == '' then redis.call('DEL', p .. 'state:' .. op[3]) else redis.call('SET', p .. 'state:' .. op[3], op[4]) end
    elseif name == 'hist' then
      local key = p .. 'hist:' .. op[3]
      redis.call('ZADD', key, op[4], op[5])
      redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (op[4] - HIST_MS))
      redis.call('ZREMRANGEBYRANK', key, 0, -HIST_KEEP - 1)
      redis.call('PEXPIRE', key, HIST_MS)
    elseif name == 'phone' then
      local key = p .. 'case:' .. op[3] .. ':' .. op[4]
      redis.call('HSET', key, 'phone', op[5])
      if not redis.call('HGET', key, 'status') then redis.call('PEXPIRE', key, PENDING_MS) end
    elseif name == 'gpost' then
      local key = p .. 'group:' .. op[3]
      redis.call('ZADD', p .. 'groups', 0, op[3])
      local cycle = tonumber(redis.call('HGET', key, 'cycle') or '0')
      if op[4] >= cycle then
        redis.call('HSET', key, 'cycle', op[4], 'posted_at', op[5], 'confirmed', 0)
      end
    elseif name == 'gconf' then
      local key = p .. 'group:' .. op[3]
      if tonumber(redis.call('HGET', key, 'cycle') or '-1') == op[4] then
        local n = redis.call('HINCRBY', key, 'confirmed', 1)
        local roster = tonumber(redis.call('HGET', key, 'roster') or '0')
        if roster < n and roster > 0 then redis.call('HSET', key, 'roster', n); roster = n end
        if roster > 0 and n >= roster then redis.call('HDEL', key, 'posted_at') end  -- the last OK closes it
      end
    elseif name == 'gunc' then
      local key = p .. 'group:' .. op[3]
      redis.call('ZADD', p .. 'groups', 0, op[3])
      redis.call('HSET', key, 'unconfirmed_at', op[5], 'unconfirmed', op[6])
      if tonumber(redis.call('HGET', key, 'cycle') or '-1') == op[4] then
        redis.call('HSET', key, 'roster', tonumber(redis.call('HGET', key, 'confirmed') or '0') + op[6])
        redis.call('HDEL', key, 'posted_at')
      end
    elseif name == 'rsent' then
      local rid, member, area, drill, at = op[3], op[4], op[5], op[6], op[7]
      local r = p .. 'roll:' .. rid
      if redis.call('HSETNX', r .. ':st', member, 'waiting|' .. area .. '|' .. at) == 1 then
        if redis.call('ZADD', p .. 'rolls', 'NX', at, rid) == 1 then
          -- a new roll-call: each member's status is kept as long as a closed case, the tally (no one
          -- named in it) as long as the daily counts; older roll-calls leave the list
          redis.call('PEXPIRE', r .. ':st', CLOSED_MS)
          redis.call('ZREMRANGEBYSCORE', p .. 'rolls', '-inf', at - DAILY_MS)
        end
        redis.call('HSETNX', r, 'drill', drill)
        redis.call('HSETNX', r, 'at', at)
        redis.call('PEXPIRE', r, DAILY_MS)
        roll_move(r, member, nil, 'waiting', area, at)
      end
    elseif name == 'rans' or name == 'rlist' then
      local rid, member = op[3], op[4]
      local to, at = op[5], op[6]
      if name == 'rlist' then to, at = 'listed', op[5] end
      local r = p .. 'roll:' .. rid
      local v = redis.call('HGET', r .. ':st', member)
      if v then
        local from, area, sent = string.match(v, '^([^|]*)|([^|]*)|(.*)$')
        local moves = (name == 'rlist' and from == 'waiting') or (name == 'rans' and from ~= 'need_help'
                      and not (from == 'safe' and to == 'safe'))
        if moves then
          roll_move(r, member, from, to, area, at)
          redis.call('HSET', r .. ':st', member, to .. '|' .. area .. '|' .. sent)
          if name == 'rans' and from ~= 'safe' then
            redis.call('HINCRBY', r .. ':curve', math.floor((at - tonumber(sent)) / 60000), 1)
            redis.call('PEXPIRE', r .. ':curve', DAILY_MS)
          end
        end
      end
    elseif name == 'pix' then
      -- the phone index: a member's number as a blind entry (streams/sealed.py), never the number
      local member, new = op[3], op[4]
      local okey = p .. 'phoneof:' .. member
      local old = redis.call('GET', okey)
      if old ~= new then
        if old then redis.call('SREM', p .. 'phone:' .. old, member) end
        if new ~= '' then
          redis.call('SADD', p .. 'phone:' .. new, member)
          redis.call('SET', okey, new)
        else
          redis.call('DEL', okey)
        end
      end
    elseif name == 'forget' then
      -- a resident withdrew: every key and list entry naming them goes; the counts stay
      local member = op[3]
      for _, kind in ipairs({%(kinds)s}) do
        for _, list in ipairs({p .. 'open:' .. kind, p .. 'closed:' .. kind}) do
          for _, id in ipairs(redis.call('ZRANGE', list, 0, -1)) do
            if string.sub(id, 1, #member + 1) == member .. ':' then
              redis.call('ZREM', list, id)
              redis.call('DEL', p .. 'case:' .. id, p .. 'acks:' .. id)
            end
          end
        end
      end
      local blind = redis.call('GET', p .. 'phoneof:' .. member)
      if blind then redis.call('SREM', p .. 'phone:' .. blind, member) end
      redis.call('DEL', p .. 'mopen:' .. member, p .. 'sent:' .. member, p .. 'hist:' .. member,
                 p .. 'state:' .. member, p .. 'phoneof:' .. member)
      local t = string.sub(p, 1, #p - 3)
      redis.call('HDEL', t .. 'profiles', member)  -- staff's profile and the roster row it came from (streams/residents)
      local rows = redis.call('HGETALL', t .. 'pending')
      for i = 1, #rows, 2 do
        if cjson.decode(rows[i + 1]).used_by == member then redis.call('HDEL', t .. 'pending', rows[i]) end
      end
      for _, rid in ipairs(redis.call('ZRANGE', p .. 'rolls', 0, -1)) do
        local r = p .. 'roll:' .. rid
        local v = redis.call('HGET', r .. ':st', member)
        if v then
          local from, area = string.match(v, '^([^|]*)|([^|]*)|')
          redis.call('ZREM', r .. ':need_help', member)
          redis.call('ZREM', r .. ':' .. from .. ':' .. area, member)
          redis.call('HDEL', r .. ':st', member)
        end
      end
    elseif name == 'use' then
      local key = p .. 'usage:' .. op[3]
      redis.call('INCRBY', key, op[4])
      redis.call('PEXPIRE', key, DAILY_MS)
    elseif name == 'guse' then
      local size = tonumber(redis.call('HGET', p .. 'group:' .. op[4], 'roster') or '0')
      local key = p .. 'usage:' .. op[3]
      redis.call('INCRBY', key, math.max(1, size))
      redis.call('PEXPIRE', key, DAILY_MS)
    else
      applied = applied - 1
    end
  end
end
redis.call('HSET', KEYS[1], field, last)
return applied
""" % {"sent": SENT_DAYS * DAY_MS, "daily": DAILY_DAYS * DAY_MS, "closed": CLOSED_DAYS * DAY_MS,
       "pending": PENDING_PHONE_DAYS * DAY_MS, "keep": CLOSED_KEEP, "hist": HISTORY_DAYS * DAY_MS,
       "hist_keep": HISTORY_KEEP, "urgent": URGENT_FIRST,
       "kinds": ", ".join(f"'{kind}'" for kind in sorted(fx.ESCALATIONS))}

# Staff recorded an outcome on an open case. KEYS[1] = the case hash; ARGV = prefix, member, cycle,
# action, at, close ("1" / "0"). Returns 1, or 0 if the case is not open (closed meanwhile, or unknown).
_RECORD = """
local p, member, cycle, action, at, close = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local key = KEYS[1]
local f = redis.call('HMGET', key, 'status', 'kind')
if f[1] ~= 'open' then return 0 end
redis.call('HSET', key, 'last_action', action, 'last_action_at', at)
if close == '1' then
  local id = member .. ':' .. cycle
  redis.call('HSET', key, 'status', 'closed', 'closed_at', at, 'outcome', action)
  redis.call('ZREM', p .. 'open:' .. f[2], id)
  redis.call('ZADD', p .. 'closed:' .. f[2], at, id)
  redis.call('ZREMRANGEBYRANK', p .. 'closed:' .. f[2], 0, -%(keep)d - 1)
  redis.call('SREM', p .. 'mopen:' .. member, cycle)
  redis.call('PEXPIRE', key, %(closed)d)
end
return 1
""" % {"keep": CLOSED_KEEP, "closed": CLOSED_DAYS * DAY_MS}


class Writer:
    """Applies the records of one tenant's effects and escalations topics, exactly once per offset."""

    def __init__(self, redis: aioredis.Redis, tenant: str, zone: str = rs.DEFAULT_ZONE):
        self.redis, self.tenant, self.zone = redis, tenant, zone
        self.prefix = prefix(tenant)
        self._apply = redis.register_script(_APPLY)

    @property
    def offsets_key(self) -> str:
        return self.prefix + "offsets"

    async def offsets(self) -> dict[tuple[str, int], int]:
        """(topic kind, partition) -> the last offset applied."""
        raw = await self.redis.hgetall(self.offsets_key)
        out = {}
        for field, value in raw.items():
            kind, _, number = _text(field).partition(":")
            out[(kind, int(number))] = int(value)
        return out

    async def apply(self, batches: Iterable[tuple[str, int, list[tuple[int, bytes]]]]) -> int:
        """Batches of (topic kind, partition, [(offset, value), ...]), each in offset order; one
        script per batch, pipelined in one round trip. Returns the number of operations applied."""
        calls = []
        for kind, number, records in batches:
            if not records:
                continue
            ops = [[offset, *op] for offset, value in records for op in record_ops(kind, value, self.zone)]
            calls.append(([self.offsets_key], [self.prefix, f"{kind}:{number}", records[-1][0],
                                               json.dumps(ops, ensure_ascii=False)]))
        if not calls:
            return 0
        if len(calls) == 1:
            return int(await self._apply(*calls[0]))
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                await self._apply(keys, args, client=pipe)
            return sum(int(n) for n in await pipe.execute())


# --- reading (the admin pages) ------------------------------------------------------------------------

CASE_FIELDS = ("member", "cycle", "kind", "at", "told", "status", "last_action", "last_action_at", "closed_at",
               "outcome", "sent_at", "phone", "reason", "reminders", "reminded_at", "urgent")
_INTS = {"cycle", "at", "told", "last_action_at", "closed_at", "sent_at", "posted_at", "confirmed", "roster",
         "unconfirmed_at", "unconfirmed", "reminders", "reminded_at", "urgent"}


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _has(raw: dict | None, field: str) -> bool:
    return bool(raw) and (field in raw or field.encode() in raw)


def _row(raw: dict, fields: Iterable[str]) -> dict:
    got = {_text(k): _text(v) for k, v in raw.items()}
    out = {}
    for f in fields:
        v = got.get(f)
        if v in (None, ""):
            out[f] = None
        elif f in _INTS:
            out[f] = int(v)
        elif f == "phone":   # sealed on the escalations topic and here (streams/sealed.py)
            out[f] = unseal(v)
        else:
            out[f] = v
    return out


class Reader:
    """The admin pages' reads of one Redis: a few keys a page, never a scan."""

    def __init__(self, redis: aioredis.Redis):
        self.redis = redis
        self._record = redis.register_script(_RECORD)

    async def overview(self, tenant: str, days: list[str], month: str) -> tuple[dict, int, dict[str, int]]:
        """(daily counts {day: {kind: n}}, usage of `month`, open cases {kind: n}) in one round trip."""
        p = prefix(tenant)
        async with self.redis.pipeline(transaction=False) as pipe:
            for day in days:
                pipe.hgetall(p + "daily:" + day)
            pipe.get(p + "usage:" + month)
            for kind in fx.ESCALATIONS:
                pipe.zcard(p + "open:" + kind)
            got = await pipe.execute()
        daily = {}
        for day, raw in zip(days, got):
            if raw:
                daily[day] = {_text(k): int(v) for k, v in raw.items()}
        usage = int(got[len(days)] or 0)
        opens = dict(zip(fx.ESCALATIONS, (int(n) for n in got[len(days) + 1:])))
        return daily, usage, opens

    async def daily(self, tenant: str, days: list[str]) -> dict[str, dict[str, int]]:
        return (await self.overview(tenant, days, "0000-00"))[0]

    async def usage(self, tenant: str, month: str) -> int:
        return int(await self.redis.get(prefix(tenant) + "usage:" + month) or 0)

    async def open_count(self, tenant: str, kind: str) -> int:
        return int(await self.redis.zcard(prefix(tenant) + "open:" + kind))

    async def oldest_open(self, tenant: str, kind: str) -> int | None:
        """The oldest open case's time: the first score of the help cases (brought forward by
        URGENT_FIRST) or of the others, whichever is earlier."""
        key = prefix(tenant) + "open:" + kind
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(key, "-inf", "(0", start=0, num=1, withscores=True)
            pipe.zrangebyscore(key, 0, "+inf", start=0, num=1, withscores=True)
            urgent, other = await pipe.execute()
        times = [int(score) + URGENT_FIRST for _, score in urgent] + [int(score) for _, score in other]
        return min(times) if times else None

    async def cases(self, tenant: str, kind: str, status: str, limit: int = 200) -> list[dict]:
        """Open cases oldest first; closed ones newest first (as the embedded read side)."""
        p = prefix(tenant)
        if status == "open":
            ids = await self.redis.zrange(p + "open:" + kind, 0, limit - 1)
        else:
            ids = await self.redis.zrevrange(p + "closed:" + kind, 0, limit - 1)
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for case_id in ids:
                pipe.hgetall(p + "case:" + _text(case_id))
            rows = await pipe.execute()
        return [_row(raw, CASE_FIELDS) for raw in rows if _has(raw, "kind")]

    async def by_phone(self, tenant: str, phone: str) -> list[str]:
        """The members whose phone number is `phone` (the blind index the states keep)."""
        keys = [f"{prefix(tenant)}phone:{b}" for b in keyring().phone_blinds(phone)]
        return sorted(m.decode() for m in await self.redis.sunion(keys))

    async def case(self, tenant: str, member: str, cycle: int) -> dict | None:
        raw = await self.redis.hgetall(f"{prefix(tenant)}case:{member}:{cycle}")
        if not _has(raw, "kind"):
            return None
        return _row(raw, CASE_FIELDS)

    async def acknowledged(self, tenant: str, keys: list[tuple[str, int]]) -> dict[tuple[str, int], list[int]]:
        """For each (member, cycle): when the contacts who said 「見に行きます」 said it, in order."""
        if not keys:
            return {}
        p = prefix(tenant)
        async with self.redis.pipeline(transaction=False) as pipe:
            for member, cycle in keys:
                pipe.hvals(f"{p}acks:{member}:{cycle}")
            got = await pipe.execute()
        return {key: sorted(int(v) for v in vals) for key, vals in zip(keys, got)}

    async def groups(self, tenant: str, limit: int = 500) -> list[dict]:
        p = prefix(tenant)
        ids = await self.redis.zrange(p + "groups", 0, limit - 1)
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for grp in ids:
                pipe.hgetall(p + "group:" + _text(grp))
            rows = await pipe.execute()
        fields = ("cycle", "posted_at", "roster", "confirmed", "unconfirmed_at", "unconfirmed")
        return [{"grp": _text(grp), **_row(raw, fields)} for grp, raw in zip(ids, rows)]

    async def record_action(self, tenant: str, member: str, cycle: int, action: str, at: int, close: bool) -> bool:
        """Staff recorded an outcome on an open case; with `close`, it closes. False if not open."""
        p = prefix(tenant)
        done = await self._record([f"{p}case:{member}:{cycle}"], [p, member, cycle, action, at, "1" if close else "0"])
        return int(done) == 1

    # --- roll-calls -------------------------------------------------------------------------------

    async def rollcalls(self, tenant: str, limit: int = 50) -> list[dict]:
        """The tenant's roll-calls, newest first: id, drill, when it went out, members asked."""
        p = prefix(tenant)
        ids = [_text(i) for i in await self.redis.zrevrange(p + "rolls", 0, limit - 1)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for rid in ids:
                pipe.hgetall(p + "roll:" + rid)
            got = await pipe.execute()
        out = []
        for rid, raw in zip(ids, got):
            fields = {_text(k): int(v) for k, v in raw.items()}
            asked = sum(n for k, n in fields.items() if "|" in k)
            out.append({"rollcall": rid, "drill": fields.get("drill", 0), "at": fields.get("at"), "asked": asked})
        return out

    async def rollcall_tally(self, tenant: str, rollcall: str) -> dict[str, dict[str, int]]:
        raw = await self.redis.hgetall(prefix(tenant) + "roll:" + rollcall)
        rows = []
        for key, n in raw.items():
            status, sep, area = _text(key).partition("|")
            if sep and int(n):
                rows.append((area, status, int(n)))
        return rs.roll_tally(rows)

    async def rollcall_members(self, tenant: str, rollcall: str, status: str, limit: int = 5000) -> list[dict]:
        """The members waiting or listed (by area, then member) or asking for help (by when)."""
        p = prefix(tenant) + "roll:" + rollcall
        if status == rs.NEED_HELP:
            keys = [p + ":need_help"]
        elif status in (rs.WAITING, rs.LISTED):
            areas = sorted(area for area, counts in (await self.rollcall_tally(tenant, rollcall)).items()
                           if area != "*" and counts[status])
            keys = [f"{p}:{status}:{area}" for area in areas]
        else:
            return []  # who is safe is counted, not listed
        members: list[tuple[str, int]] = []
        for key in keys:
            got = await self.redis.zrange(key, 0, limit - len(members) - 1, withscores=True)
            members += [(_text(m), int(score)) for m, score in got]
            if len(members) >= limit:
                break
        if not members:
            return []
        values = await self.redis.hmget(p + ":st", [m for m, _ in members])
        out = []
        for (member, score), value in zip(members, values):
            if value is None:
                continue
            said, area, sent = _text(value).split("|", 2)
            asked = said == rs.NEED_HELP
            out.append({"member": member, "area": area, "sent_at": int(sent), "answer": rs.NEED_HELP if asked else None,
                        "answered_at": score if asked else None, "listed": int(said == rs.LISTED)})
        if status != rs.NEED_HELP:
            out.sort(key=lambda row: (row["area"], row["member"]))
        return out

    async def rollcall_curve(self, tenant: str, rollcall: str, until_minutes: int) -> list[int]:
        raw = await self.redis.hgetall(prefix(tenant) + "roll:" + rollcall + ":curve")
        return rs.answer_curve(((int(k), int(v)) for k, v in raw.items()), until_minutes)

    async def clear_drill(self, tenant: str, rollcall: str) -> int:
        """Forget a drill's tally (real roll-calls are kept); the members it had asked."""
        p = prefix(tenant)
        r = p + "roll:" + rollcall
        if await self.redis.hget(r, "drill") not in (b"1", "1"):
            return 0
        tally = await self.rollcall_tally(tenant, rollcall)
        keys = [r, r + ":st", r + ":curve", r + ":need_help"]
        keys += [f"{r}:{status}:{area}" for area in tally if area != "*" for status in (rs.WAITING, rs.LISTED)]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*keys)
            pipe.zrem(p + "rolls", rollcall)
            await pipe.execute()
        return tally["*"]["asked"]
