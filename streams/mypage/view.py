"""What My Page says, in words: the settings, the next check, the pause, contacts, the invitation and
the history. Pure: a member's state, effects and an instant in; Japanese sentences out.

It speaks like the LINE chat (agents/prompts.py): the same names for services, intervals, weekdays
and times, so a resident never meets two names for one thing. LINE ids are never shown: contacts
are 「ご家族など（1人目）」.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import date
from urllib.parse import unquote

from agents import prompts, signup
from agents.clock import local_ordinal, offset_ms
from agents.member import CLOSED_BY_STAFF, ESCALATED, IDLE, MemberState
from schemas import effects as fx
from schemas.effects import Effect
from schemas.settings import NOTIFY, WATCH, MemberSettings

WEEKDAY_SHORT = "月火水木金土日"
SHARE_PREFIX = "https://line.me/R/share?text="


def day_label(ordinal: int) -> str:
    """「12月1日（火）」."""
    d = date.fromordinal(ordinal)
    return f"{d.month}月{d.day}日（{WEEKDAY_SHORT[d.weekday()]}）"


def when_label(zone: str, at: int) -> str:
    """「12月1日 午前9時」: the day and time of an instant in the tenant's zone."""
    d = date.fromordinal(local_ordinal(zone, at))
    minute = (at + offset_ms(zone, at)) // 60_000 % (24 * 60)
    return f"{d.month}月{d.day}日 {prompts.clock_label(minute)}"


def settings_label(s: MemberSettings) -> str:
    """「安否通知・毎日 午前9時」."""
    return f"{prompts.SERVICE_NAMES[s.service]}・{prompts.schedule_label(signup.of_settings(s))}"


def phone_hint(phone: str | None) -> str | None:
    """Only the last four digits: enough for the resident to recognise their number."""
    return f"末尾 {phone[-4:]}" if phone else None


@dataclass(frozen=True, slots=True)
class Status:
    settings: str            # 「安否通知・毎日 午前9時」
    next_check: str          # a sentence about the next (or the open) check
    paused_until: str | None  # 「12月5日（土）」: checks start again that day
    phone: str | None        # 「末尾 5678」 (watch only)


def status(state: MemberState, now: int) -> Status:
    s, zone = state.settings, state.settings.schedule.zone
    paused = None
    if state.paused_until is not None and state.paused_until > now:
        paused = day_label(local_ordinal(zone, state.paused_until))
    if state.held and state.phase == ESCALATED:
        sentence = "担当の職員（またはご家族など）が、様子を確かめに連絡します。確かめ終わると、またお送りします。"
    elif not state.following:
        sentence = "LINEの友だち登録が解除されているため、いまはお送りしていません。"
    elif state.phase == IDLE and state.due is not None:
        sentence = f"次は {when_label(zone, state.due)} ごろにお送りします。"
    elif state.phase == ESCALATED:
        who = "ご家族など" if s.service == NOTIFY and s.contacts else "担当の職員"
        sentence = f"お返事がなかったため、{who}にお知らせしました。LINEで「元気です」を押してください。"
    elif state.phase != IDLE:
        sentence = "「お元気ですか？」をお送りしています。LINEで「元気です」を押してください。"
    else:
        sentence = "次にお送りする日時は、まだ決まっていません。"
    return Status(settings_label(s), sentence, paused, phone_hint(s.phone) if s.service == WATCH else None)


# --- contacts and invitations --------------------------------------------------------------------


def contact_ref(secret: str, contact: str) -> str:
    """An opaque handle for one contact in a form: the page never carries the LINE id itself, and
    the handle means nothing outside this session (keyed by its secret)."""
    return hmac.new(secret.encode(), contact.encode(), hashlib.sha256).hexdigest()[:20]


def contacts(s: MemberSettings, secret: str, quiet: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """[(「ご家族など（1人目）」, handle), …] in the order they were added; 「夜は朝7時にお知らせ」 for
    those who chose quiet nights (agents/nights.py)."""
    return [(f"ご家族など（{i}人目）" + ("　夜は朝7時にお知らせ" if c in quiet else ""), contact_ref(secret, c))
            for i, c in enumerate(s.contacts, 1)]


@dataclass(frozen=True, slots=True)
class Invitation:
    text: str        # what the resident sends (the same words as the LINE chat's invitation card)
    share_url: str   # LINE's share screen with that text ready
    until: str       # 「12月4日 午前9時」


def invitation(state: MemberState, now: int, friend_url: str = "") -> Invitation | None:
    """The open invitation, if one is still good."""
    if state.invite is None or state.invite_until is None or state.invite_until < now:
        return None
    url = _share_url(prompts.invitation_card(state.invite, friend_url))
    return Invitation(unquote(url[len(SHARE_PREFIX):]), url, when_label(state.settings.schedule.zone,
                                                                       state.invite_until))


def _share_url(node) -> str:
    """The share button's URI inside the LINE card: the card is where the wording lives."""
    if isinstance(node, dict):
        uri = node.get("uri")
        if isinstance(uri, str) and uri.startswith(SHARE_PREFIX):
            return uri
        node = list(node.values())
    if isinstance(node, list):
        for child in node:
            found = _share_url(child)
            if found:
                return found
    return ""


# --- history -------------------------------------------------------------------------------------


STAFF_CALL_LINES = {fx.HELP: "担当の職員に、助けが必要なことをお知らせしました",
                    fx.UNCLAIMED: "ご家族などからお返事がなかったので、担当の職員にお知らせしました",
                    fx.UNFOLLOWED_WATCH: "LINEの友だち登録が解除されたので、担当の職員にお知らせしました"}


def history_line(e: Effect) -> str | None:
    """One effect of the member's own as a plain sentence; None for what is not worth telling."""
    kind = e.effect
    if kind == fx.CHECK_SENT:
        return "「お元気ですか？」をお送りしました"
    if kind == fx.CHECK_RESENT:
        return "お返事がなかったので、もう一度お送りしました"
    if kind == fx.CONFIRMED:
        return "お返事をいただきました"
    if kind == fx.RESOLVED_AFTER_ESCALATION:
        return ("職員が確認を終えました" if e.data == CLOSED_BY_STAFF
                else "お返事をいただきました（お知らせした方にも伝わります）")
    if kind == fx.STAFF_CALL:
        return STAFF_CALL_LINES.get(e.data or "", "お返事がなかったので、担当の職員にお知らせしました")
    if kind == fx.HELP_REQUESTED:
        return "「助けてほしい」を受け取りました"
    if kind == fx.ALL_CLEAR:
        return f"お知らせしたご家族など（{len(e.to or ())}人）に、お返事があったことを伝えました"
    if kind == fx.CONTACTS_NOTIFIED:
        why = "「助けてほしい」を受けて" if fx.notice_reason(e.data) == fx.HELP else "お返事がなかったので"
        return f"{why}、ご家族など（{len(e.to or ())}人）にお知らせしました"
    if kind == fx.AREA_SET:
        return "担当の職員が、お住まいの地区を設定しました" if e.area else "担当の職員が、お住まいの地区の設定を外しました"
    if kind == fx.ENROLLED:
        return "登録しました"
    if kind == fx.PHONE_SAVED:
        return "お電話番号を登録しました"
    if kind == fx.INVITE_CREATED:
        return "招待を作りました"
    if kind == fx.CONTACT_ADDED:
        return "ご家族など（連絡先）が1人増えました"
    if kind == fx.CONTACT_LEFT:
        return "ご家族など（連絡先）の1人が、連絡先をやめました"
    if kind == fx.UNFOLLOWED:
        return "LINEの友だち登録が解除されました"
    if kind == fx.FOLLOWED:
        return "LINEの友だち登録が戻りました"
    return None  # welcome, sign-up questions, My Page links: the resident's own taps


def history(effects: list[Effect], member: str, zone: str) -> list[tuple[str, str]]:
    """[(「12月1日 午前9時」, sentence), …] in the order given (the store reads newest first), of
    `member`'s own effects only."""
    out = []
    for e in effects:
        line = history_line(e) if e.subject == member else None
        if line is not None:
            out.append((when_label(zone, e.at), line))
    return out
