"""Staff set a resident's or a group's area (SetArea): the roll-calls it is in from then on, and
nothing else: not a sign of life, so an open check stays open."""
import pytest

from agents.partition import Partition
from agents.subject import Refused
from schemas import effects as fx
from schemas.events import Register, RollCall, SetArea
from schemas.settings import NOTIFY, GroupSettings, MemberSettings, Schedule
from streams import codec

T0 = 1_796_050_800_000  # 2026-12-01T00:00+09:00
HOUR = 3_600_000
DAILY_9 = Schedule("1d", 9 * 60, "Asia/Tokyo")


def town() -> Partition:
    part = Partition()
    part.apply("U001", Register(T0, MemberSettings("U001", NOTIFY, DAILY_9, None, ())))
    part.apply("C001", Register(T0, GroupSettings("C001", DAILY_9, ("U001",))))
    return part


def test_an_area_set_by_staff_puts_the_subject_in_that_areas_roll_calls_and_answers_no_check():
    part = town()
    assert sorted(e.effect for e in part.tick(T0 + 9 * HOUR)) == [fx.CHECK_SENT, fx.GROUP_CHECK_POSTED]
    assert part.rollcall(RollCall(T0 + 10 * HOUR, "R1", ("kita",))) == []   # no area yet: not in it
    for subject in ("U001", "C001"):
        [effect] = part.apply(subject, SetArea(T0 + 10 * HOUR, subject, "kita"))
        assert (effect.effect, effect.subject, effect.area) == (fx.AREA_SET, subject, "kita")
        assert part.table[subject].settings.area == "kita"
        assert part.apply(subject, SetArea(T0 + 10 * HOUR, subject, "kita")) == []  # already so: nothing
    assert part.table["U001"].open  # staff, not the resident: the check is still waiting for an answer
    sent = part.rollcall(RollCall(T0 + 11 * HOUR, "R2", ("kita",)))
    assert {(e.effect, e.subject) for e in sent} == {(fx.ROLLCALL_SENT, "U001"), (fx.GROUP_ROLLCALL_POSTED, "C001")}
    assert fx.CHECK_RESENT in {e.effect for e in part.tick(T0 + 33 * HOUR)}  # the ladder went on
    [cleared] = part.apply("U001", SetArea(T0 + 34 * HOUR, "U001", None))
    assert cleared.area is None and part.table["U001"].settings.area is None
    from streams.mypage.view import history_line   # the resident's own history tells them
    assert history_line(effect) == "担当の職員が、お住まいの地区を設定しました"
    assert history_line(cleared) == "担当の職員が、お住まいの地区の設定を外しました"


def test_a_set_area_record_survives_the_codec_and_a_bad_one_is_refused_or_undecodable():
    for event in (SetArea(T0, "U001", "kita"), SetArea(T0, "C001", None)):
        assert codec.event_from_obj(codec.loads(codec.dumps(codec.event_to_obj(event)))) == event
    with pytest.raises(codec.Undecodable, match="set_area.area"):
        codec.event_from_obj({"type": "set_area", "at": T0, "subject": "U001", "area": 3})
    part = town()
    with pytest.raises(Refused, match="SetArea: area"):
        part.apply("U001", SetArea(T0, "U001", ""))
    with pytest.raises(Refused, match="not addressed"):
        part.apply("U001", SetArea(T0, "C001", "kita"))
    assert part.table["U001"].settings.area is None
