"""streams/jma/trigger.py, driven by JMA's own bulletins (tests/fixtures/jma): real ones of February 2021, and
JMA's published samples (32-35_04 鹿児島, 32-35_06 the 2008 岩手・宮城内陸地震 with its 取消,
32-35_07 the 2009 駿河湾, 32-35_08 two quakes a minute apart, 32-39_11 the 2011-03-11 東北地方太平洋沖地震).

The tenants' areas carry the real 市町村等 and 細分区域 codes those files name. Every `now` is a
bulletin's own report time (plus a stated delay), so nothing here depends on today's date."""
import json
from pathlib import Path

import pytest

from streams.jma import trigger as q
from agents.clock import HOUR, MINUTE
from streams.jma.trigger import Cancel, Hold, Memory, QuakeSettings, Skip, Start
from schemas.events import RESEND_AFTER_DEFAULT, RollCall
from streams.jma import bulletin as jb
from schemas.areas import Area

JMA = Path(__file__).resolve().parent / "fixtures" / "jma"  # ../shared/jma, copied unchanged (SOURCE.md)

# 2011-03-11 14:46 東北地方太平洋沖地震: the 震度速報, then the first 震源・震度に関する情報 (with cities)
TOHOKU_51, TOHOKU_53 = "32-39_11_01_120615_VXSE51.xml", "32-39_11_05_120615_VXSE53.xml"
# 2008-06-14 岩手・宮城内陸地震: VXSE52 発表 and 取消, VXSE53 serials 1, 2, 3, then the VXSE53 取消
IWATE = {n: f"32-35_06_0{n}_100915_VXSE5{3 if n > 2 else 2}.xml" for n in range(1, 7)}
# 2009-08-11 駿河湾: five 震度速報, then VXSE53 serials 1 and 2
SURUGA = {n: f"32-35_07_0{n}_100915_VXSE5{3 if n > 5 else 1}.xml" for n in range(1, 8)}
# 2010-07-05: two quakes (EventID …065511 and …065610) a minute apart, their 震度速報 interleaved
TWIN = {n: f"32-35_08_0{n}_100915_VXSE51.xml" for n in range(1, 6)}


def data(name: str, status: str | None = None) -> bytes:
    raw = (JMA / name).read_bytes()
    if status is not None:   # a copy of a real bulletin with another Control/Status (see each use)
        was = next(s for s in jb.STATUSES if f"<Status>{s}</Status>".encode() in raw)
        raw = raw.replace(f"<Status>{was}</Status>".encode(), f"<Status>{status}</Status>".encode(), 1)
    return raw


def parsed(name: str, status: str | None = None) -> jb.Bulletin:
    return jb.parse(data(name, status))


def town(*areas: Area, **settings) -> QuakeSettings:
    return QuakeSettings("town", areas, **settings)


def run(settings: QuakeSettings, *names: str, memory: Memory = Memory(), delay: int = 0):
    """Each bulletin at its own report time (+ delay): the memory after all, and each one's actions."""
    out = []
    for name in names:
        b = parsed(name)
        memory, actions = q.on_bulletin(memory, settings, b, b.report_at_ms + delay)
        out.append(actions)
    return memory, out


def at(name: str) -> int:
    return parsed(name).report_at_ms


def started(actions) -> list[RollCall]:
    return [a.rollcall for a in actions if isinstance(a, Start)]


def reasons(actions) -> list[str]:
    return [a.reason for a in actions if isinstance(a, Skip)]


# areas of the tenants, with the codes of the files above
KURIHARA = Area("kurihara", "栗原市", city="0421300", region="220")       # 宮城県北部
HITACHI = Area("hitachi", "日立市", city="0820200", region="300")         # 茨城県北部
CHIYODA = Area("chiyoda", "千代田区", city="1310100", region="350")       # 東京都２３区
OSHU = Area("oshu", "奥州市", city="0321500", region="213")               # 岩手県内陸南部
KANEGASAKI = Area("kanegasaki", "金ケ崎町", city="0338100")              # known by its city only
SOMA = Area("soma", "相馬市", city="0720900", region="251")               # 福島県浜通り
COAST_N = Area("coast-n", "岩手県沿岸北部", region="210")
COAST_S = Area("coast-s", "岩手県沿岸南部", region="211")
INLAND_N = Area("inland-n", "岩手県内陸北部", region="212")
OSUMI = Area("osumi", "鹿児島県大隅", region="771")
TANEGASHIMA = Area("tanegashima", "種子島", region="776")
KOSHIKI = Area("koshiki", "甑島", region="770")                           # 震度3 in 32-35_04


# --- rule 1: strength and threshold -----------------------------------------------------------------


def test_the_stronger_of_city_and_area_and_neither_is_never_hit():
    b = parsed(TOHOKU_53)
    assert q.strength(Area("chuo", "中央区", city="1310200", region="350"), b) == "5+"   # city 5-, area 5+
    assert q.strength(Area("c", "千代田区", city="1310100"), b) == "5+"
    assert q.strength(Area("x", "どこでもない", city="9999999", region="350"), b) == "5+"
    assert q.strength(Area("none", "コードなし"), b) is None
    memory, actions = q.on_bulletin(Memory(), town(Area("none", "コードなし"), threshold="1"), b, b.report_at_ms)
    assert reasons(actions) == ["no_area"] and not started(actions)


def test_starts_at_the_threshold_and_not_below():
    # 32-35_04_01: 大隅 and 種子島 震度4, 甑島 震度3
    settings = town(OSUMI, KOSHIKI, TANEGASHIMA, threshold="4")
    _, [actions] = run(settings, "32-35_04_01_100831_VXSE51.xml")
    assert actions == [Start(RollCall(at=at("32-35_04_01_100831_VXSE51.xml"), id="jma-20100125161221",
                                      areas=("osumi", "tanegashima"), resend_after=RESEND_AFTER_DEFAULT))]
    memory, [below] = run(town(OSUMI, KOSHIKI, TANEGASHIMA), "32-35_04_01_100831_VXSE51.xml")
    assert below == [Skip("20100125161221", "below_threshold")]
    assert memory.held == () and memory.claims == ()


def test_intensities_rank_not_compare_as_strings():
    # 2011 震度速報: 宮城県北部 and 中部 6強, 宮城県南部 6弱 ("6-" > "6+" as strings)
    south = Area("miyagi-s", "宮城県南部", region="221")
    central = Area("miyagi-c", "宮城県中部", region="222")
    _, [actions] = run(town(south, KURIHARA, central, threshold="6強"), TOHOKU_51)
    assert [rc.areas for rc in started(actions)] == [("kurihara", "miyagi-c")]


def test_bulletins_without_intensity_start_nothing():
    settings = town(KURIHARA, threshold="1")
    _, [hypocentre, distant] = run(settings, IWATE[1], "20230410231623_04156158_VXSE53.xml")
    assert hypocentre == [Skip("20080614084350", "no_intensity")]
    assert distant == [Skip("20230410221000", "no_intensity")]   # a distant quake: no 震度 in Japan


# --- rule 2: 試験 and 訓練 ------------------------------------------------------------------------------


def test_a_test_bulletin_never_starts_anything():
    # no file in tests/fixtures/jma has Status 試験: a copy of the real 2011 bulletin with <Status> replaced
    b = parsed(TOHOKU_53, status="試験")
    memory, actions = q.on_bulletin(Memory(), town(KURIHARA, drills=True, threshold="1"), b, b.report_at_ms)
    assert actions == [Skip("20110311144640", "test")] and memory == Memory()


def test_a_drill_starts_only_where_the_tenant_opted_in_and_is_marked():
    drill = "32-35_01_03_100806_VXSE53.xml"   # JMA's sample: a real 訓練 bulletin (静岡県, 震度5弱)
    nishiizu = Area("nishiizu", "西伊豆町", city="2230600")
    yaizu = Area("yaizu", "焼津市", city="2221200", region="442")
    assert parsed(drill).status == "訓練"
    memory, [actions] = run(town(yaizu, nishiizu), drill)
    assert actions == [Skip("20091001134500", "drill_not_opted_in")] and memory == Memory()
    memory, [actions] = run(town(yaizu, nishiizu, drills=True), drill)
    assert actions == [Start(RollCall(at(drill), "jma-drill-20091001134500", ("yaizu", "nishiizu"), drill=True))]
    # the same quake for real (a copy with <Status>通常</Status>): tracked apart, so it starts too
    real = parsed(drill, status="通常")
    memory, actions = q.on_bulletin(memory, town(yaizu, nishiizu, drills=True), real, real.report_at_ms)
    assert actions == [Start(RollCall(real.report_at_ms, "jma-20091001134500", ("yaizu", "nishiizu")))]


def test_drills_and_real_quakes_do_not_hold_each_other_back():
    settings = town(COAST_N, COAST_S, INLAND_N, threshold="3", drills=True)
    memory, [first] = run(settings, TWIN[1])   # real: 沿岸北部 and 南部 震度3
    # the second quake's 震度速報 as a drill (a copy with <Status>訓練</Status>): 沿岸北部 is 3 again,
    # which a real aftershock could not take, but a drill is not held back by a real roll-call
    b = parsed(TWIN[2], status="訓練")
    memory, drill = q.on_bulletin(memory, settings, b, b.report_at_ms)
    assert started(drill) == [RollCall(b.report_at_ms, "jma-drill-20100705065610",
                                       ("coast-n", "coast-s", "inland-n"), drill=True)]
    memory, [real] = run(settings, TWIN[2], memory=memory)
    assert [rc.areas for rc in started(real)] == [("coast-s", "inland-n")]
    assert reasons(real) == ["weaker_aftershock"]


# --- rules 3 and 4: one roll-call per event and area ---------------------------------------------------


def test_vxse53_after_vxse51_asks_the_new_areas_only():
    settings = town(CHIYODA, KURIHARA, Area("sapporo", "札幌市中央区", city="0110100", region="100"), HITACHI)
    memory, [quick, full] = run(settings, TOHOKU_51, TOHOKU_53)
    assert started(quick) == [RollCall(at(TOHOKU_51), "jma-20110311144640", ("kurihara",))]
    # 茨城県北部 was 4 in the 震度速報, 6強 in the VXSE53; 東京 was not in the 震度速報 at all
    assert started(full) == [RollCall(at(TOHOKU_53), "jma-20110311144640-2", ("chiyoda", "hitachi"))]
    memory, again = q.on_bulletin(memory, settings, parsed(TOHOKU_53), at(TOHOKU_53) + MINUTE)
    assert again == [Skip("20110311144640", "already_started")]


def test_cities_of_the_vxse53_widen_a_real_2021_event():
    # 2021-02-18 04:00 震度速報: 愛知県西部 3; 04:02 VXSE53 names 豊田市 (3) among its cities
    aichi = Area("aichi-w", "愛知県西部", region="451")
    toyota = Area("toyota", "豊田市", city="2321100")
    quick, full = "20210217190009_0_VXSE51_010000.xml", "20210217190220_0_VXSE53_010000.xml"
    _, [first, second] = run(town(toyota, aichi, threshold="3"), quick, full)
    assert started(first) == [RollCall(at(quick), "jma-20210218035836", ("aichi-w",))]
    assert started(second) == [RollCall(at(full), "jma-20210218035836-2", ("toyota",))]


def test_hold_then_release_at_the_due_instant():
    settings = town(OSHU, KURIHARA, hold_ms=10 * MINUTE)
    memory, [actions] = run(settings, IWATE[3])
    due = at(IWATE[3]) + 10 * MINUTE
    held = RollCall(due, "jma-20080614084350", ("oshu", "kurihara"))
    assert actions == [Hold(held, due)] and q.next_due(memory) == due
    assert q.release(memory, settings, due - 1) == (memory, [])
    # released late (the shell was down): still stamped with its due instant
    after, actions = q.release(memory, settings, due + 30 * MINUTE)
    assert actions == [Start(held)] and q.next_due(after) is None
    assert q.release(after, settings, due + 31 * MINUTE)[1] == []


def test_new_areas_join_the_roll_call_still_held():
    settings = town(OSHU, KANEGASAKI, KURIHARA, threshold="5強", hold_ms=30 * MINUTE)
    due = at(IWATE[3]) + 30 * MINUTE
    memory, [first, second, third] = run(settings, IWATE[3], IWATE[4], IWATE[5])
    assert first == [Hold(RollCall(due, "jma-20080614084350", ("oshu", "kurihara")), due)]
    assert second == [Skip("20080614084350", "already_started")]
    # 金ケ崎町 is 5弱 in serials 1 and 2, 5強 in serial 3: it joins, in the tenant's order, same instant
    assert third == [Hold(RollCall(due, "jma-20080614084350", ("oshu", "kanegasaki", "kurihara")), due)]
    assert q.release(memory, settings, due)[1] == [Start(third[0].rollcall)]


# --- rule 5: 取消 ----------------------------------------------------------------------------------------


def test_a_cancellation_stops_a_held_roll_call():
    settings = town(OSHU, KURIHARA, hold_ms=30 * MINUTE)
    memory, steps = run(settings, IWATE[3], IWATE[2], IWATE[4], IWATE[5], IWATE[6])
    assert steps[1] == [Skip("20080614084350", "hypocenter_only")]   # the VXSE52's 取消 stops nothing
    assert steps[-1] == [Cancel("jma-20080614084350", started=False)]
    assert q.next_due(memory) is None
    assert q.release(memory, settings, at(IWATE[3]) + 30 * MINUTE)[1] == []


def test_a_cancellation_reports_a_started_roll_call_and_cancels_the_held_one():
    settings = town(OSHU, KANEGASAKI, threshold="5強", hold_ms=10 * MINUTE)
    memory, [first, second, cancel] = run(settings, IWATE[3], IWATE[5], IWATE[6])
    first_due, second_due = at(IWATE[3]) + 10 * MINUTE, at(IWATE[5]) + 10 * MINUTE
    assert first == [Hold(RollCall(first_due, "jma-20080614084350", ("oshu",)), first_due)]
    # serial 3 at 09:01: the first hold ended at 08:57 and starts first; 金ケ崎町, 5強 now, is new: a second one
    assert second == [Start(RollCall(first_due, "jma-20080614084350", ("oshu",))),
                      Hold(RollCall(second_due, "jma-20080614084350-2", ("kanegasaki",)), second_due)]
    assert cancel == [Cancel("jma-20080614084350-2", started=False),
                      Cancel("jma-20080614084350", started=True)]
    memory, again = q.on_bulletin(memory, settings, parsed(IWATE[6]), at(IWATE[6]) + MINUTE)
    assert again == [Skip("20080614084350", "nothing_to_cancel")]
    # the 取消 withdrew serial 3: a copy of it stamped after the 取消 (ReportDateTime 09:07) starts nothing
    late = jb.parse(data(IWATE[5]).replace(b"2008-06-14T09:01:00+09:00</ReportDateTime>",
                                           b"2008-06-14T09:07:00+09:00</ReportDateTime>"))
    assert late.serial == 3 and late.report_at_ms > at(IWATE[6])
    assert q.on_bulletin(memory, settings, late, late.report_at_ms)[1] == [Skip("20080614084350", "cancelled")]


def test_a_cancellation_of_a_started_roll_call_without_hold():
    memory, [start, cancel, old] = run(town(KURIHARA), IWATE[3], IWATE[6], IWATE[5])
    assert [rc.id for rc in started(start)] == ["jma-20080614084350"]
    assert cancel == [Cancel("jma-20080614084350", started=True)]
    assert old == [Skip("20080614084350", "out_of_order")]   # serial 3 of 09:01 after the 取消 of 09:06


# --- rule 6: aftershocks ---------------------------------------------------------------------------------


def test_a_second_quake_within_6h_starts_only_where_it_is_stronger():
    settings = town(COAST_N, COAST_S, INLAND_N, threshold="3")
    memory, [first, second, third] = run(settings, TWIN[1], TWIN[2], TWIN[3])
    assert started(first) == [RollCall(at(TWIN[1]), "jma-20100705065511", ("coast-n", "coast-s"))]
    # …065610: 沿岸南部 4 (stronger than 3), 内陸北部 4 (new), 沿岸北部 3 (not stronger)
    assert second == [Skip("20100705065610", "weaker_aftershock", ("coast-n",)),
                      Start(RollCall(at(TWIN[2]), "jma-20100705065610", ("coast-s", "inland-n")))]
    # …065511 again: 内陸北部 4 is new for it, but …065610 asked there at 4 a minute before
    assert third == [Skip("20100705065511", "weaker_aftershock", ("inland-n",))]


def test_an_area_is_free_again_6h_after_its_roll_call():
    settings = town(COAST_N, COAST_S, INLAND_N, threshold="3")
    memory, _ = run(settings, TWIN[1])
    b = parsed(TWIN[2])
    _, just_before = q.on_bulletin(memory, settings, b, at(TWIN[1]) + 6 * HOUR - 1)
    assert reasons(just_before) == ["weaker_aftershock"]
    _, after = q.on_bulletin(memory, settings, b, at(TWIN[1]) + 6 * HOUR)
    assert reasons(after) == [] and started(after)[0].areas == ("coast-n", "coast-s", "inland-n")


def test_real_2021_aftershocks_of_fukushima():
    # 相馬市 震度2 at 15:05, 19:40 and 21:46 on 2021-02-18, three quakes (three EventIDs)
    first, second, third = ("20210218060544_0_VXSE53_010000.xml", "20210218104033_0_VXSE53_010000.xml",
                            "20210218124610_0_VXSE53_010000.xml")
    _, [one, two, three] = run(town(SOMA, threshold="2"), first, second, third)
    assert started(one) == [RollCall(at(first), "jma-20210218150250", ("soma",))]
    assert two == [Skip("20210218193739", "weaker_aftershock", ("soma",))]   # 4 h 35 min later, as strong
    assert started(three) == [RollCall(at(third), "jma-20210218214309", ("soma",))]   # 6 h 41 min later


def test_a_stronger_quake_takes_an_area_from_a_held_roll_call():
    settings = town(COAST_N, COAST_S, INLAND_N, threshold="3", hold_ms=5 * MINUTE)
    due = at(TWIN[1]) + 5 * MINUTE
    memory, [first, second] = run(settings, TWIN[1], TWIN[2])
    assert first == [Hold(RollCall(due, "jma-20100705065511", ("coast-n", "coast-s")), due)]
    assert second == [Skip("20100705065610", "weaker_aftershock", ("coast-n",)),
                      Skip("20100705065511", "superseded", ("coast-s",)),
                      Hold(RollCall(due, "jma-20100705065511", ("coast-n",)), due),
                      Hold(RollCall(due, "jma-20100705065610", ("coast-s", "inland-n")), due)]
    _, released = q.release(memory, settings, due)
    assert [rc.areas for rc in started(released)] == [("coast-n",), ("coast-s", "inland-n")]


# --- rule 7: order and age -------------------------------------------------------------------------------


def test_an_older_serial_arriving_late_changes_nothing():
    settings = town(Area("shizuoka-c", "静岡県中部", region="442"), threshold="6-")
    memory, [newer] = run(settings, SURUGA[7])
    assert [rc.id for rc in started(newer)] == ["jma-20090811050711"]
    for older in (SURUGA[6], SURUGA[5]):   # serial 1 of 05:13, then the 震度速報 of 05:11
        after, actions = q.on_bulletin(memory, settings, parsed(older), at(SURUGA[7]) + MINUTE)
        assert actions == [Skip("20090811050711", "out_of_order")] and after == memory


def test_an_older_bulletin_is_out_of_order_even_after_one_that_asked_nobody():
    # the newer serial names 静岡県中部 too, but the tenant's threshold is higher: the event is remembered
    settings = town(Area("shizuoka-c", "静岡県中部", region="442"), threshold="6+")
    memory, [newer, older] = run(settings, SURUGA[7], SURUGA[6])
    assert newer == [Skip("20090811050711", "below_threshold")]
    assert older == [Skip("20090811050711", "out_of_order")]


def test_a_stale_bulletin_is_skipped():
    b = parsed(TOHOKU_53)
    memory, actions = q.on_bulletin(Memory(), town(KURIHARA), b, b.report_at_ms + 24 * HOUR + 1)
    assert actions == [Skip("20110311144640", "stale")] and memory == Memory()
    _, actions = q.on_bulletin(Memory(), town(KURIHARA), b, b.report_at_ms + 24 * HOUR)
    assert [rc.id for rc in started(actions)] == ["jma-20110311144640"]


# --- the memory ------------------------------------------------------------------------------------------


def test_memory_goes_to_json_and_back():
    settings = town(COAST_N, COAST_S, INLAND_N, threshold="3", hold_ms=5 * MINUTE, drills=True)
    memory, _ = run(settings, TWIN[1], TWIN[2])
    b = parsed(TWIN[4], status="訓練")   # a drill copy, so the memory holds both tracks
    memory, _ = q.on_bulletin(memory, settings, b, b.report_at_ms)
    assert memory.events and memory.held and memory.claims
    text = json.dumps(memory.to_obj(), ensure_ascii=False)
    restored = Memory.from_obj(json.loads(text))
    assert restored == memory
    # and the decision goes on the same from either
    due = q.next_due(memory)
    assert q.next_due(restored) == due
    assert q.release(restored, settings, due) == q.release(memory, settings, due)
    later = parsed(TWIN[5])
    assert q.on_bulletin(restored, settings, later, due) == q.on_bulletin(memory, settings, later, due)


def test_the_memory_forgets_what_can_no_longer_matter():
    settings = town(COAST_N, COAST_S, INLAND_N, threshold="3")
    memory, _ = run(settings, TWIN[1], TWIN[2], TWIN[3])
    assert len(memory.events) == 2 and memory.claims
    six_hours, _ = q.release(memory, settings, at(TWIN[3]) + 6 * HOUR)
    assert six_hours.claims == () and len(six_hours.events) == 2
    a_day, _ = q.release(memory, settings, at(TWIN[3]) + 24 * HOUR + 1)
    assert a_day == Memory()


def test_settings_read_the_threshold_as_people_write_it():
    assert town(KURIHARA, threshold="震度５弱以上").threshold == "5-"
    assert town(KURIHARA).threshold == "5-" and town(KURIHARA).resend_after == RESEND_AFTER_DEFAULT
    with pytest.raises(ValueError):
        town(KURIHARA, threshold="5")   # 5弱 or 5強? never guessed
    with pytest.raises(ValueError):
        town(KURIHARA, hold_ms=-1)
