"""The engine's side of the conversations (sign-up, phone, invitations, groups), on a frozen clock."""
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from agents import invitation, signup
from agents.clock import DAY, HOUR
from agents.partition import Partition
from agents.subject import addressed
from schemas import effects as fx
from schemas.events import (AcceptInvite, Enroll, Follow, GroupJoined, GroupLeft, Invite, Message, Ok, Phone,
                            Register, Roster, Setup)
from schemas.settings import GroupSettings, MemberSettings, Schedule
from streams import codec

T0 = int(datetime(2026, 12, 1, 0, 0, tzinfo=ZoneInfo("Asia/Tokyo")).timestamp() * 1000)
DAILY_9 = Schedule("1d", 9 * 60, "Asia/Tokyo")
ME, FAMILY, OTHER = "U" + "1" * 32, "U" + "2" * 32, "U" + "3" * 32
GROUP = "C" + "9" * 32


def run(part: Partition, *events):
    out = []
    for event in events:
        for subject in addressed(event):
            out += part.apply(subject, event)
            again = codec.event_from_obj(codec.loads(codec.dumps(codec.event_to_obj(event))))
            assert again == event  # every event travels
    for subject, state in part.table.items():
        assert codec.state_from_obj(codec.loads(codec.dumps(codec.state_to_obj(state)))) == state
    for effect in out:
        assert codec.effect_from_obj(codec.loads(codec.dumps(codec.effect_to_obj(effect)))) == effect
    return out


def kinds(effects):
    return [e.effect for e in effects]


def enrolled(part, service="notify", at=T0):
    return run(part, Enroll(at, MemberSettings(ME, service, DAILY_9)))


def test_before_sign_up_nothing_is_stored_and_every_answer_asks_the_next_question():
    part = Partition()
    assert kinds(run(part, Follow(T0, ME))) == [fx.WELCOME]
    [prompt] = run(part, Setup(T0 + 1, ME, "s=notify&i=weekly"))
    assert prompt.effect == fx.SETUP_PROMPT and prompt.data == "s=notify&i=weekly" and prompt.subject == ME
    assert run(part, Ok(T0 + 2, ME), Message(T0 + 3, ME), Phone(T0 + 4, ME, "0312345678"), Invite(T0 + 5, ME, "x")) == []
    assert dict(part.table) == {}


def test_sign_up_registers_the_member_and_the_first_check_follows_the_choice():
    part = Partition()
    [done] = enrolled(part)
    assert (done.effect, done.data) == (fx.ENROLLED, "s=notify&i=1d&t=540")
    assert kinds(part.tick(T0 + 9 * HOUR)) == [fx.CHECK_SENT]


def test_choosing_again_in_line_keeps_what_the_new_service_uses_and_answers_the_open_check():
    part = Partition()
    run(part, Enroll(T0, MemberSettings(ME, "watch", DAILY_9)), Phone(T0 + 1, ME, "0312345678"))
    part.tick(T0 + 9 * HOUR)
    effects = run(part, Enroll(T0 + 10 * HOUR, MemberSettings(ME, "watch", Schedule("3d", 8 * 60, "Asia/Tokyo"))))
    assert kinds(effects) == [fx.CONFIRMED, fx.ENROLLED]  # a tap is a sign of life too
    assert part.table[ME].settings.phone == "0312345678"
    run(part, Enroll(T0 + 11 * HOUR, MemberSettings(ME, "notify", DAILY_9)))
    assert part.table[ME].settings.phone is None  # 安否通知 never keeps a number


def test_the_watch_service_asks_for_a_number_and_only_it_keeps_one():
    part = Partition()
    [done] = enrolled(part, "watch")
    assert done.data.endswith("&need=phone")
    assert kinds(run(part, Phone(T0 + 1, ME, "09012345678"))) == [fx.PHONE_SAVED]
    assert part.table[ME].settings.phone == "09012345678"

    other = Partition()
    run(other, Enroll(T0, MemberSettings(OTHER, "notify", DAILY_9)))
    assert run(other, Phone(T0 + 1, OTHER, "09012345678")) == []
    assert other.table[OTHER].settings.phone is None


def test_an_invitation_works_once_for_three_days_for_someone_else():
    part = Partition()
    enrolled(part)
    code = invitation.make(ME, "01JDEADBEEF")
    [made] = run(part, Invite(T0 + 1, ME, code))
    assert (made.effect, made.data) == (fx.INVITE_CREATED, code)
    assert invitation.read(invitation.message(code)) == (ME, code)
    assert kinds(run(part, AcceptInvite(T0 + 2, ME, FAMILY, code + "x"))) == [fx.INVITE_REFUSED]
    assert kinds(run(part, AcceptInvite(T0 + 2, ME, ME, code))) == [fx.INVITE_REFUSED]  # not oneself
    [added] = run(part, AcceptInvite(T0 + 3, ME, FAMILY, code))
    assert (added.effect, added.member) == (fx.CONTACT_ADDED, FAMILY)
    assert part.table[ME].settings.contacts == (FAMILY,)
    [refused] = run(part, AcceptInvite(T0 + 4, ME, OTHER, code))  # used
    assert (refused.effect, refused.member) == (fx.INVITE_REFUSED, OTHER)

    late = invitation.make(ME, "01JLATE")
    run(part, Invite(T0 + 5, ME, late))
    assert kinds(run(part, AcceptInvite(T0 + 5 + 3 * DAY + 1, ME, OTHER, late)))[-1] == fx.INVITE_REFUSED
    first, second = invitation.make(ME, "a"), invitation.make(ME, "b")
    run(part, Invite(T0 + 4 * DAY, ME, first), Invite(T0 + 4 * DAY + 1, ME, second))
    assert kinds(run(part, AcceptInvite(T0 + 4 * DAY + 2, ME, OTHER, first)))[-1] == fx.INVITE_REFUSED  # replaced
    assert kinds(run(part, AcceptInvite(T0 + 4 * DAY + 3, ME, OTHER, second)))[-1] == fx.CONTACT_ADDED


def test_the_invited_contact_is_told_when_the_member_does_not_answer():
    part = Partition()
    enrolled(part)
    code = invitation.make(ME, "seed")
    run(part, Invite(T0 + 1, ME, code), AcceptInvite(T0 + 2, ME, FAMILY, code))
    effects = part.tick(T0 + 9 * HOUR + 27 * HOUR)
    assert [(e.effect, e.to) for e in effects][-1] == (fx.CONTACTS_NOTIFIED, (FAMILY,))


def test_invitations_belong_to_the_notify_service_and_to_known_members():
    part = Partition()
    enrolled(part, "watch")
    assert run(part, Invite(T0 + 1, ME, "code")) == []
    nobody = Partition()
    [refused] = run(nobody, AcceptInvite(T0, OTHER, FAMILY, "code"))
    assert (refused.effect, refused.member) == (fx.INVITE_REFUSED, FAMILY) and dict(nobody.table) == {}


def test_a_group_starts_on_join_learns_its_roster_and_stops_when_the_account_leaves():
    part = Partition()
    [hello] = run(part, GroupJoined(T0, GROUP, DAILY_9))
    assert (hello.effect, hello.data) == (fx.GROUP_WELCOME, "i=1d&t=540")
    run(part, Roster(T0 + 1, GROUP, joined=(ME, FAMILY, OTHER)))
    assert kinds(part.tick(T0 + 9 * HOUR)) == [fx.GROUP_CHECK_POSTED]
    run(part, Ok(T0 + 10 * HOUR, ME, GROUP), Roster(T0 + 11 * HOUR, GROUP, left=(OTHER,)))
    [missing] = part.tick(T0 + 32 * HOUR)
    assert missing.effect == fx.GROUP_UNCONFIRMED and missing.members == (FAMILY,)

    run(part, GroupLeft(T0 + 40 * HOUR, GROUP))
    assert part.tick(T0 + 10 * DAY) == []
    assert kinds(run(part, GroupJoined(T0 + 10 * DAY + 1, GROUP, DAILY_9))) == [fx.GROUP_WELCOME]
    assert kinds(part.tick(T0 + 10 * DAY + 9 * HOUR)) == [fx.GROUP_CHECK_POSTED]


def test_when_the_last_one_missing_leaves_the_group_the_check_is_complete():
    part = Partition()
    run(part, GroupJoined(T0, GROUP, DAILY_9), Roster(T0 + 1, GROUP, joined=(ME, FAMILY)))
    part.tick(T0 + 9 * HOUR)
    run(part, Ok(T0 + 10 * HOUR, ME, GROUP), Roster(T0 + 11 * HOUR, GROUP, left=(FAMILY,)))
    assert part.tick(T0 + 32 * HOUR) == []  # nobody to list
    assert part.table[GROUP].posted_at is None


def test_a_group_state_saved_before_groups_could_leave_still_loads():
    state = Partition()
    run(state, GroupJoined(T0, GROUP, DAILY_9))
    saved = codec.state_to_obj(state.table[GROUP])[:-2]  # without `active` and `last_at`
    assert codec.state_from_obj(saved) == state.table[GROUP]._replace(last_at=0)


@pytest.mark.parametrize("data, problem", [("s=maybe", "s:"), ("i=2w", "i:"), ("w=someday", "w:"),
                                           ("t=1440", "t:"), ("t=-5", "t:"), ("t=9am", "t:")])
def test_sign_up_data_we_never_wrote_is_refused_by_name(data, problem):
    with pytest.raises(ValueError, match=problem):
        signup.parse(data)


def test_sign_up_choices_round_trip_and_lead_to_settings():
    choices = signup.parse("action=setup&s=notify&i=biweekly&w=fri&t=1230")
    assert signup.encode(choices) == "s=notify&i=biweekly&w=fri&t=1230"
    assert signup.next_question(choices) == signup.CONFIRM
    settings = signup.settings(ME, choices, "Asia/Tokyo")
    assert settings == MemberSettings(ME, "notify", Schedule("biweekly", 1230, "Asia/Tokyo", 4))
    assert signup.of_settings(settings) == choices
    assert signup.parse("s=notify&i=1d&w=fri").weekday is None  # a weekday only goes with weekly schedules
    with pytest.raises(ValueError, match="time is missing"):
        signup.settings(ME, signup.parse("s=watch&i=1d"), "Asia/Tokyo")


def test_configured_groups_start_active():
    part = Partition()
    run(part, Register(T0, GroupSettings(GROUP, DAILY_9, (ME,))))
    assert part.table[GROUP].active and kinds(part.tick(T0 + 9 * HOUR)) == [fx.GROUP_CHECK_POSTED]


def test_a_case_staff_close_says_so_and_one_the_resident_closes_does_not():
    from schemas.events import Resolve
    for closing, data in ((Resolve, "staff"), (Ok, None)):
        part = Partition()
        enrolled(part, "watch")
        part.tick(T0 + 9 * HOUR + 27 * HOUR)  # check, resend, staff call
        [closed] = [e for e in run(part, closing(T0 + 2 * DAY, ME)) if e.effect != fx.STAFF_REMINDER]
        assert (closed.effect, closed.data) == (fx.RESOLVED_AFTER_ESCALATION, data)


def test_my_page_is_a_link_for_members_and_the_way_in_for_everyone_else():
    from schemas.events import OpenMyPage
    part = Partition()
    assert kinds(run(part, OpenMyPage(T0, ME))) == [fx.WELCOME] and dict(part.table) == {}
    enrolled(part)
    [link] = run(part, OpenMyPage(T0 + 1, ME))
    assert (link.effect, link.subject) == (fx.MYPAGE_LINK, ME)


def test_a_contact_who_will_go_and_look_is_heard_once_the_case_is_open_and_only_then():
    from schemas.events import Acknowledge
    part = Partition()
    enrolled(part)
    code = invitation.make(ME, "seed")
    run(part, Invite(T0 + 1, ME, code), AcceptInvite(T0 + 2, ME, FAMILY, code))
    part.tick(T0 + 36 * HOUR)  # check, resend, the family told (cycle 1)
    [going] = run(part, Acknowledge(T0 + 37 * HOUR, ME, FAMILY, 1))
    assert (going.effect, going.member, going.cycle) == (fx.CONTACT_ACKNOWLEDGED, FAMILY, 1)
    assert run(part, Acknowledge(T0 + 37 * HOUR, ME, OTHER, 1)) == []  # not one of her contacts
    run(part, Ok(T0 + 38 * HOUR, ME))
    [late] = run(part, Acknowledge(T0 + 39 * HOUR, ME, FAMILY, 1))
    assert (late.effect, late.member) == (fx.ACK_NOT_NEEDED, FAMILY)  # she has answered meanwhile
