"""Notices from the municipality (お知らせ配信): what staff may write, who gets it, what LINE shows. Pure.

A notice is a kind (災害・避難 / 重要 / お知らせ), a title and a body, sent to a segment of the tenant's
subjects: by service (見守り, 安否通知, つながり groups), optionally only the members who have not
answered their current check (read-model label sent / resent / escalated: a disaster roll-call).
There are no area tags in member settings yet, so there is no area segment; when settings carry
one, `Segment` grows a field and `selects` a test.

The message is one Flex bubble, the same for everyone (so it goes by multicast, ≤ 500 a call); a
disaster notice may carry one big 「無事です」 button whose postback is the check card's own
`action=ok`, so one tap is a sign of life for the engine (an open check closes, staff see it).

Delivery is planned here too: recipients sorted and cut into chunks of ≤ 500 users (one multicast
each), then one push per group; each chunk's X-Line-Retry-Key is a UUID of the tenant, the notice
id and the chunk index only, so a delivery resumed after a crash sends the very same requests and
LINE answers 409 to those it had accepted.
"""
from __future__ import annotations

import re
import uuid
from typing import Iterable, Mapping, NamedTuple

from agents.blocks import ALT_TEXT_MAX, MUTED_COLOR, button, footer
from agents.blocks import text as _text
from agents.messages import OK_DATA, postback
from agents.outbound import MULTICAST, MULTICAST_MAX_TO, PUSH, RETRY_KEY_NAMESPACE

DISASTER, IMPORTANT, INFO = "disaster", "important", "info"
KINDS = {DISASTER: "災害・避難", IMPORTANT: "重要", INFO: "お知らせ"}
HEADERS = {DISASTER: "災害・避難情報", IMPORTANT: "重要なお知らせ", INFO: "お知らせ"}
# dark enough for white text (WCAG AA contrast)
COLORS = {DISASTER: "#B3261E", IMPORTANT: "#8A4B00", INFO: "#1A7F37"}

WATCH, NOTIFY, GROUP = "watch", "notify", "group"
SERVICES = {WATCH: "見守り", NOTIFY: "安否通知", GROUP: "つながり（グループ）"}
UNANSWERED_PHASES = frozenset({"sent", "resent", "escalated"})   # agents/readside.label member phases
MEMBER_PHASES = ("idle", "sent", "resent", "escalated")           # "unfollowed" (blocked) gets nothing
GROUP_LABELS = ("group:idle", "group:posted")

TITLE_MAX = 40        # one line on a phone
BODY_MAX = 1000       # a screen or two; LINE's Flex limit (30 KB a bubble) is far above it
SAFE_LABEL = "無事です"
SAFE_NOTE = "ご無事でしたら、下の「無事です」を押してください。"

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


class Segment(NamedTuple):
    """Who gets a notice: the services chosen, and whether only those who have not answered."""
    services: tuple[str, ...]         # subset of SERVICES, in SERVICES order
    unanswered: bool = False          # members only: groups have no single answer to wait for

    def to_obj(self) -> dict:
        return {"services": list(self.services), "unanswered": self.unanswered}

    @staticmethod
    def from_obj(obj: Mapping) -> "Segment":
        return make_segment(obj.get("services", ()), bool(obj.get("unanswered", False)))


def make_segment(services: Iterable[str], unanswered: bool = False) -> Segment:
    chosen = set(services)
    return Segment(tuple(s for s in SERVICES if s in chosen), unanswered)


class Draft(NamedTuple):
    kind: str
    title: str
    body: str
    segment: Segment
    ok_button: bool       # disaster notices only


def clean(text: str) -> str:
    """Line breaks made \\n, invisible control and direction characters dropped, ends trimmed."""
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    return _CONTROL.sub("", text).strip()


def draft(kind: str, title: str, body: str, services: Iterable[str], unanswered: bool = False,
          ok_button: bool = False) -> tuple[Draft, list[str]]:
    """The draft as staff typed it (cleaned), and what is wrong with it, in plain Japanese ([] if nothing)."""
    title, body = clean(title), clean(body)
    title = " ".join(title.split("\n"))
    segment = make_segment(services, unanswered)
    errors = []
    if kind not in KINDS:
        errors.append("種類を「" + "」「".join(KINDS.values()) + "」から選んでください。")
    if not title:
        errors.append("件名を入力してください。")
    elif len(title) > TITLE_MAX:
        errors.append(f"件名は{TITLE_MAX}文字以内にしてください（いま{len(title)}文字です）。")
    if not body:
        errors.append("本文を入力してください。")
    elif len(body) > BODY_MAX:
        errors.append(f"本文は{BODY_MAX:,}文字以内にしてください（いま{len(body):,}文字です）。")
    if not segment.services:
        errors.append("送り先を一つ以上選んでください。")
    elif segment.unanswered and segment.services == (GROUP,):
        errors.append("「確認に未回答の方だけ」は見守り・安否通知の方が対象です。見守りか安否通知も選んでください。")
    return Draft(kind, title, body, segment, ok_button and kind == DISASTER), errors


# --- who gets it -------------------------------------------------------------------------------------


def selects(segment: Segment, label: str | None) -> bool:
    """Whether a subject with this read-model label (agents/readside.label) is a recipient."""
    if label is None:
        return False
    service, _, phase = label.partition(":")
    if service == GROUP:   # not "group:left": the account is no longer in it
        return GROUP in segment.services and not segment.unanswered and label in GROUP_LABELS
    if service not in segment.services or phase not in MEMBER_PHASES:
        return False               # "unfollowed": they blocked the account, LINE would deliver nothing
    return phase in UNANSWERED_PHASES if segment.unanswered else True


def estimate(labels: Mapping[str, int], segment: Segment) -> tuple[int, int]:
    """(people, groups) the segment reaches, from the read side's label counts (no scan of members).

    The exact list is fixed when the notice is sent."""
    people = groups = 0
    for label, n in labels.items():
        if n > 0 and selects(segment, label):
            if label.startswith(GROUP + ":"):
                groups += n
            else:
                people += n
    return people, groups


# --- what LINE shows ---------------------------------------------------------------------------------


def card(d: Draft) -> dict:
    """The notice as one Flex bubble: a coloured band with the kind, the title, the body; and for a
    disaster notice with `ok_button`, one big 「無事です」 button (postback action=ok)."""
    header = HEADERS[d.kind]
    bubble: dict = {
        "type": "bubble",
        "size": "mega",
        "header": {"type": "box", "layout": "vertical", "backgroundColor": COLORS[d.kind], "paddingAll": "14px",
                   "contents": [_text(header, size="md", weight="bold", color="#FFFFFF")]},
        "body": {"type": "box", "layout": "vertical", "spacing": "md",
                 "contents": [_text(d.title, size="xl", weight="bold"), {"type": "separator"},
                              _text(d.body, size="lg")]},
    }
    if d.ok_button:
        bubble["body"]["contents"].append(_text(SAFE_NOTE, size="md", color=MUTED_COLOR, margin="lg"))
        bubble["footer"] = footer([button(postback(SAFE_LABEL, OK_DATA, SAFE_LABEL))])
    return {"type": "flex", "altText": f"【{header}】{d.title}"[:ALT_TEXT_MAX], "contents": bubble}


def messages(d: Draft) -> list[dict]:
    """The message objects of one request (LINE's messaging-api.yml `messages`): the card alone."""
    return [card(d)]


# --- how it is delivered -----------------------------------------------------------------------------


class Chunk(NamedTuple):
    index: int
    endpoint: str                  # multicast (users, ≤ 500) | push (one group)
    recipients: tuple[str, ...]


def chunks(users: Iterable[str], groups: Iterable[str], size: int = MULTICAST_MAX_TO) -> list[Chunk]:
    """Users sorted, ≤ `size` a multicast; then each group by push (multicast takes user ids only)."""
    users, groups = sorted(set(users)), sorted(set(groups))
    out = [Chunk(i, MULTICAST, tuple(users[start:start + size]))
           for i, start in enumerate(range(0, len(users), size))]
    return out + [Chunk(len(out) + i, PUSH, (g,)) for i, g in enumerate(groups)]


def retry_key(tenant: str, notice_id: str, chunk: int) -> str:
    """The X-Line-Retry-Key of one chunk: the same in every process, run and restart."""
    return str(uuid.uuid5(RETRY_KEY_NAMESPACE, f"notice\n{tenant}\n{notice_id}\n{chunk}"))


def percent(sent: int, failed: int, total: int) -> int:
    """How far delivery has come (recipients handed to LINE or given up on), 0–100, 100 only when done."""
    if total <= 0:
        return 100
    done = sent + failed
    return 100 if done >= total else min(99, done * 100 // total)
