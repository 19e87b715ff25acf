"""JMA earthquake bulletins read from JMA's own files (tests/fixtures/jma: real bulletins of February 2021
and 2023, and JMA's published samples 32-35_* / 32-39_*), and the Atom feed that announces them.

Every expected value below was read by hand from the file named beside it."""
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from streams.jma import bulletin as jb
from streams.jma import feed

ROOT = Path(__file__).resolve().parent.parent
ANPI = [sys.executable, "-m", "streams.cli"]
JMA = Path(__file__).resolve().parent / "fixtures" / "jma"  # ../shared/jma, copied unchanged (SOURCE.md)
FILES = sorted(JMA.glob("*.xml"))
FEED = Path(__file__).resolve().parent / "fixtures" / "jma_feed.xml"


def data(name: str) -> bytes:
    return (JMA / name).read_bytes()


def parsed(name: str) -> jb.Bulletin:
    return jb.parse(data(name))


def refused(document: bytes) -> str:
    with pytest.raises(jb.BadBulletin) as caught:
        jb.parse(document)
    reason = str(caught.value)
    assert reason and "\n" not in reason   # one line, to print after "anpi jma parse: FILE: "
    return reason


# --- every file --------------------------------------------------------------------------------------

def test_the_data_is_there():
    assert len(FILES) == 93


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_file_parses_and_its_kind_is_the_one_its_name_says(path):
    b = jb.parse(path.read_bytes())
    assert b.kind == re.search(r"VXSE5[123]", path.name)[0]
    assert set(b.areas.values()) | set(b.cities.values()) <= set(jb.INTENSITIES)
    if b.kind == "VXSE51":
        assert b.hypocenter is None and b.origin_time is None and b.cities == {} and b.serial is None
    if b.kind == "VXSE52":
        assert b.areas == {} and b.cities == {} and b.serial is None
    if b.info_type == "取消":
        assert b.hypocenter is None and b.areas == {} and b.cities == {} and b.text
    elif b.kind != "VXSE51":
        assert b.hypocenter is not None and b.hypocenter.name
        assert b.hypocenter.latitude is not None and b.hypocenter.longitude is not None  # each gives its position
    json.dumps(b.to_json(), ensure_ascii=False)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_headline_agrees_with_the_body(path):
    """The Headline lists each area and city of 震度3 or more by 震度; the Body must say the same,
    震度５弱以上未入電 counting as 5-. (Both are read: an entry only in the Headline is not lost.)"""
    root = ET.fromstring(path.read_bytes())
    b = jb.parse(path.read_bytes())
    head = "{http://xml.kishou.go.jp/jmaxml1/informationBasis1/}"
    for item in root.iter(head + "Item"):
        kind = item.findtext(f"{head}Kind/{head}Name")
        shindo = "5-" if kind == "震度５弱以上未入電" else jb.parse_threshold(kind)
        areas = item.find(head + "Areas")
        found = b.areas if areas.get("codeType") == "地震情報／細分区域" else b.cities
        for area in areas.iter(head + "Area"):
            assert found[area.findtext(head + "Code")] == shindo, (kind, area.findtext(head + "Name"))


# --- VXSE53: hypocenter, areas and cities ------------------------------------------------------------

def test_vxse53_fukushima_oki_2021_02_16():
    b = parsed("20210216140226_0_VXSE53_010000.xml")
    assert b.to_json() == {
        "event_id": "20210216225935", "kind": "VXSE53", "title": "震源・震度に関する情報", "status": "通常",
        "info_type": "発表", "serial": 1, "origin_time": "2021-02-16T22:59:00+09:00",
        "report_time": "2021-02-16T23:02:00+09:00",
        "hypocenter": {"name": "福島県沖", "magnitude": 4.1, "depth_km": 50, "latitude": 37.5, "longitude": 141.6},
        "areas": {"221": "1", "222": "1", "250": "1", "251": "1"},    # 宮城県南部, 中部, 福島県中通り, 浜通り
        "cities": {"0420800": "1", "0436200": "1", "0420200": "1", "0721100": "1", "0720400": "1", "0721200": "1",
                   "0754100": "1", "0754200": "1", "0754300": "1", "0754500": "1", "0754700": "1"},
        "text": "１６日２２時５９分ころ、地震がありました。",
    }
    assert list(b.to_json()) == ["event_id", "kind", "title", "status", "info_type", "serial", "origin_time",
                                 "report_time", "hypocenter", "areas", "cities", "text"]
    assert b.report_at_ms == 1613484120000     # 2021-02-16T14:02:00Z
    assert b.origin_at_ms == 1613483940000     # 2021-02-16T13:59:00Z


def test_vxse53_fukushima_oki_2021_02_17_shindo_3():
    b = parsed("20210217140958_0_VXSE53_010000.xml")
    assert (b.event_id, b.hypocenter.name, b.hypocenter.magnitude, b.hypocenter.depth_km) == \
        ("20210217230627", "福島県沖", 4.5, 50)
    assert (len(b.areas), len(b.cities)) == (12, 100)
    assert b.areas["222"] == "3" and b.areas["251"] == "3" and b.areas["220"] == "2" and b.areas["311"] == "1"
    assert b.cities["0420200"] == "3"      # 石巻市
    assert b.cities["0754600"] == "3"      # 双葉町
    assert b.cities["0421300"] == "2"      # 栗原市
    assert b.cities["0920100"] == "1"      # 宇都宮市


def test_vxse53_tohoku_shindo_7_and_a_magnitude_jma_did_not_give():
    b = parsed("32-39_11_05_120615_VXSE53.xml")    # JMA's sample of 2011-03-11 14:46
    assert b.event_id == "20110311144640" and b.origin_time == "2011-03-11T14:46:00+09:00"
    # <jmx_eb:Magnitude condition="不明" description="Ｍ８を超える巨大地震">NaN</jmx_eb:Magnitude>
    assert b.hypocenter == jb.Hypocenter("三陸沖", None, 10, 38.0, 142.9)
    assert b.cities["0421300"] == "7"      # 栗原市 (栗原市築館 7)
    assert b.areas["220"] == "7"           # 宮城県北部
    assert b.areas["252"] == "6-" and b.areas["331"] == "6-"   # 福島県会津, 埼玉県南部
    assert [code for code, s in b.cities.items() if s == "7"] == ["0421300"]
    assert (len(b.areas), len(b.cities)) == (138, 1275)


def test_depths_ごく浅い_unknown_and_deep():
    osaka = parsed("20210216071046_0_VXSE53_270000.xml")     # "北緯３４．３度　東経１３５．２度　ごく浅い" +34.3+135.2+0/
    assert osaka.hypocenter == jb.Hypocenter("大阪府南部", 1.5, 0, 34.3, 135.2)
    kamchatka = parsed("20230410231623_04156158_VXSE53.xml")  # "深さ不明" +56.7+161.4/, Ｍ不明 NaN
    assert kamchatka.hypocenter == jb.Hypocenter("カムチャツカ半島付近", None, None, 56.7, 161.4)
    assert kamchatka.areas == {} and kamchatka.cities == {}   # 遠地地震: nothing was felt in Japan
    fiji = parsed("32-35_01_03_100514_VXSE53.xml")            # -17.2+178.6-570000/
    assert fiji.hypocenter == jb.Hypocenter("南太平洋", 7.1, 570, -17.2, 178.6)
    chile = parsed("32-39_05_01_100831_VXSE53.xml")           # -36.1-072.6-60000/: south and west are negative
    assert chile.hypocenter == jb.Hypocenter("南米西部", 8.5, 60, -36.1, -72.6)
    assert parsed("32-39_05_04_100831_VXSE53.xml").hypocenter.depth_km is None   # its depth later withdrawn
    gifu = parsed("33_12_01_120615_VXSE52.xml")               # VXSE52 with Ｍ不明
    assert gifu.hypocenter == jb.Hypocenter("岐阜県美濃中西部", None, 10, 35.6, 136.6)


def test_serials_of_one_event_count_up():
    chile = [parsed(f"32-39_05_{n}_100831_VXSE53.xml") for n in ("01", "02", "04", "05", "06", "07", "08", "12")]
    assert {b.event_id for b in chile} == {"20100227153529"}
    assert [b.serial for b in chile] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [b.hypocenter.magnitude for b in chile[:2]] == [8.5, 8.6]    # JMA revised M8.5 to M8.6


# --- 震度５弱以上未入電 ----------------------------------------------------------------------------

def test_a_city_whose_station_has_not_reported_counts_as_5弱():
    """岩手・宮城内陸地震 (2008-06-14), JMA's samples: stations that estimated 5弱 or more but whose
    value had not arrived. A roll-call must not wait for them."""
    first = parsed("32-35_06_03_100915_VXSE53.xml")
    assert first.serial == 1 and first.report_time == "2008-06-14T08:47:00+09:00"
    # <City>金ケ崎町 0338100: no MaxInt, <Condition>震度５弱以上未入電
    assert first.cities["0338100"] == "5-"
    assert first.cities["0546300"] == "5-"       # 羽後町: the same
    # 大蔵村 0636500: <MaxInt>4</MaxInt><Condition>震度５弱以上未入電: the 4 is only what arrived; the
    # Headline lists 大蔵村 under 震度５弱以上未入電, not under 震度４
    assert first.cities["0636500"] == "5-"
    assert first.areas["213"] == "6+"            # 岩手県内陸南部, 金ケ崎町's area: its MaxInt stands
    later = parsed("32-35_06_05_100915_VXSE53.xml")
    assert later.serial == 3 and later.cities["0338100"] == "5+"   # 金ケ崎町西根's 5強 arrived
    assert later.cities["0636500"] == "5-"       # 大蔵村清水 still missing

    # the Body alone says so too (the Headline is not what lifts 大蔵村's 4)
    body_only = jb.parse(_changed("32-35_06_03_100915_VXSE53.xml",
                                  "<Area><Name>大蔵村</Name><Code>0636500</Code></Area>", ""))
    assert body_only.cities["0636500"] == "5-"

    suruga = parsed("32-35_07_06_100915_VXSE53.xml")               # 駿河湾 2009-08-11
    assert suruga.cities["2221400"] == "5-" and suruga.cities["2221000"] == "5-"   # 藤枝市, 富士市 (MaxInt 4)
    assert suruga.cities["2222200"] == "6-"      # 伊豆市


def test_a_city_not_yet_reported_lifts_its_area():
    document = data("20210216140226_0_VXSE53_010000.xml").replace(
        "<City><Name>角田市</Name><Code>0420800</Code><MaxInt>1</MaxInt>".encode(),
        "<City><Name>角田市</Name><Code>0420800</Code><Condition>震度５弱以上未入電</Condition>".encode())
    b = jb.parse(document)
    assert b.cities["0420800"] == "5-" and b.areas["221"] == "5-"   # 角田市 in 宮城県南部
    assert b.cities["0436200"] == "1" and b.areas["222"] == "1"


def test_the_same_code_twice_keeps_the_strongest():
    # JMA's sample gives 山武市 (2) and 匝瑳市 (1) the one code 1299900, 南越前町 (2) and 福井若狭町 (3)
    # 1899900, 長浜市 (3) and 余呉町 (2) 2520300
    b = parsed("32-35_07_06_100915_VXSE53.xml")
    assert (b.cities["1299900"], b.cities["1899900"], b.cities["2520300"]) == ("2", "3", "3")


# --- VXSE51, VXSE52 ----------------------------------------------------------------------------------

def test_vxse51_gives_areas_only():
    b = parsed("32-39_11_01_120615_VXSE51.xml")    # 震度速報, 2011-03-11 14:48
    assert b.to_json() == {
        "event_id": "20110311144640", "kind": "VXSE51", "title": "震度速報", "status": "通常", "info_type": "発表",
        "serial": None, "origin_time": None, "report_time": "2011-03-11T14:48:00+09:00", "hypocenter": None,
        "areas": {"220": "6+", "222": "6+", "221": "6-", "211": "6-", "213": "6-", "210": "5+", "212": "5+",
                  "250": "5+", "251": "5+", "252": "3", "242": "5-", "240": "4", "243": "4", "241": "3",
                  "231": "4", "233": "4", "300": "4"},
        "cities": {},
        "text": "１１日１４時４６分ころ、地震による強い揺れを感じました。震度３以上が観測された地域をお知らせします。",
    }
    assert b.origin_at_ms is None and b.report_at_ms == 1299822480000   # 2011-03-11T05:48:00Z


def test_vxse51_of_2021_and_the_vxse53_that_followed():
    first = parsed("20210217190009_0_VXSE51_010000.xml")
    assert (first.event_id, first.areas, first.cities) == ("20210218035836", {"451": "3"}, {})   # 愛知県西部
    then = parsed("20210217190220_0_VXSE53_010000.xml")
    assert then.event_id == first.event_id and then.areas["451"] == "3"
    assert then.hypocenter == jb.Hypocenter("愛知県西部", 4.2, 40, 35.1, 137.3)


def test_an_area_only_in_the_headline_is_not_lost():
    document = data("32-39_11_01_120615_VXSE51.xml").replace(
        "<Area><Name>茨城県北部</Name><Code>300</Code><MaxInt>4</MaxInt></Area>".encode(), b"")
    assert jb.parse(document).areas["300"] == "4"


def test_vxse52_has_a_hypocenter_and_no_intensities():
    b = parsed("20210217140847_0_VXSE52_010000.xml")
    assert (b.kind, b.title, b.event_id, b.serial) == ("VXSE52", "震源に関する情報", "20210217230627", None)
    assert b.hypocenter == jb.Hypocenter("福島県沖", 4.5, 50, 37.6, 141.6)
    assert b.areas == {} and b.cities == {}
    assert b.text == "きょう１７日２３時０６分ころ、地震がありました。"


# --- 取消, 訂正, 訓練 ---------------------------------------------------------------------------------

def test_取消_withdraws_everything():
    b = parsed("32-35_06_06_100915_VXSE53.xml")
    assert b.to_json() == {
        "event_id": "20080614084350", "kind": "VXSE53", "title": "震源・震度に関する情報", "status": "通常",
        "info_type": "取消", "serial": 3, "origin_time": None, "report_time": "2008-06-14T09:06:00+09:00",
        "hypocenter": None, "areas": {}, "cities": {}, "text": "先ほどの、震源・震度情報を取り消します。",
    }
    vxse52 = parsed("32-35_06_02_100915_VXSE52.xml")
    assert (vxse52.kind, vxse52.info_type, vxse52.serial, vxse52.event_id) == ("VXSE52", "取消", None, "20080614084350")
    assert vxse52.text == "先ほどの、震源に関する情報を取り消します。"
    far = parsed("32-39_05_12_100915_VXSE53.xml")
    assert (far.info_type, far.serial, far.text) == ("取消", 8, "先ほどの、遠地地震に関する情報を取り消します。")


def test_訂正_is_read_like_発表():
    # none of the files is a 訂正: one made from a real 発表
    document = data("20210216140226_0_VXSE53_010000.xml").replace(
        "<InfoType>発表</InfoType>".encode(), "<InfoType>訂正</InfoType>".encode())
    b = jb.parse(document)
    assert b.info_type == "訂正" and b.areas == parsed("20210216140226_0_VXSE53_010000.xml").areas


def test_訓練_drills_say_so():
    drill = parsed("32-35_01_02_100514_VXSE52.xml")
    assert (drill.status, drill.kind, drill.event_id) == ("訓練", "VXSE52", "20091001134500")
    assert drill.hypocenter == jb.Hypocenter("駿河湾", 6.6, 10, 34.8, 138.5)
    drill53 = parsed("32-35_01_03_100806_VXSE53.xml")
    assert (drill53.status, drill53.areas["440"], drill53.areas["442"]) == ("訓練", "5-", "5-")
    assert parsed("32-35_01_03_100514_VXSE53.xml").status == "通常"
    assert {parsed(p.name).status for p in FILES} == {"通常", "訓練"}


# --- refusals ----------------------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE Report [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>
<Report xmlns="http://xml.kishou.go.jp/jmaxml1/"><Control><Title>&c;</Title></Control></Report>"""


@pytest.mark.parametrize("document", [
    BILLION_LAUGHS,
    b'<?xml version="1.0"?><!DOCTYPE Report SYSTEM "file:///etc/passwd"><Report/>',
    b'<!DOCTYPE Report [<!ENTITY x SYSTEM "http://example.invalid/x">]><Report>&x;</Report>',
    data("20210216140226_0_VXSE53_010000.xml").replace(
        b"<Report ", b'<!DOCTYPE Report [<!ENTITY e "x">]>\n<Report ', 1),
], ids=["entities", "external-dtd", "external-entity", "real-bulletin-with-doctype"])
def test_a_doctype_is_refused(document):
    assert "DOCTYPE" in refused(document)


def test_the_feed_refuses_a_doctype_too():
    with pytest.raises(feed.BadFeed, match="DOCTYPE"):
        feed.entries(BILLION_LAUGHS.replace(b"<Report", b"<feed").replace(b"</Report>", b"</feed>"))


def _changed(name: str, old: str, new: str) -> bytes:
    document = data(name)
    assert old.encode() in document
    return document.replace(old.encode(), new.encode(), 1)


VXSE53 = "20210216140226_0_VXSE53_010000.xml"


@pytest.mark.parametrize("document, reason", [
    (b"", "not XML"),
    (b"VXSE53", "not XML"),
    (data(VXSE53)[:2000], "not XML"),
    (b"<Report/>", "not a JMA bulletin (気象庁防災情報XML): the root element is Report"),
    (FEED.read_bytes(), "not a JMA bulletin (気象庁防災情報XML): the root element is feed (namespace "
                        "http://www.w3.org/2005/Atom)"),
    (_changed(VXSE53, 'xmlns="http://xml.kishou.go.jp/jmaxml1/" ', 'xmlns="http://xml.kishou.go.jp/jmaxml2/" '),
     "the root element is Report (namespace http://xml.kishou.go.jp/jmaxml2/)"),
    (_changed(VXSE53, "<Title>震源・震度に関する情報</Title>", "<Title>地震の活動状況等に関する情報</Title>"),
     "not an earthquake bulletin (VXSE51/52/53): Control/Title is '地震の活動状況等に関する情報'"),
    (_changed(VXSE53, "<Title>震源・震度に関する情報</Title>", "<Title>津波警報・注意報・予報a</Title>"),
     "Control/Title is '津波警報・注意報・予報a'"),
    (_changed(VXSE53, "<InfoKind>地震情報</InfoKind>", "<InfoKind>震度速報</InfoKind>"),
     "Control/Title 震源・震度に関する情報 goes with Head/InfoKind 地震情報, not '震度速報'"),
    (_changed(VXSE53, "<EventID>20210216225935</EventID>", "<EventID></EventID>"), "no Head/EventID"),
    (_changed(VXSE53, "<EventID>20210216225935</EventID>", ""), "no Head/EventID"),
    (_changed(VXSE53, "<Status>通常</Status>", "<Status>演習</Status>"),
     "Control/Status is '演習', not one of 通常 訓練 試験"),
    (_changed(VXSE53, "<InfoType>発表</InfoType>", "<InfoType>遅延</InfoType>"), "Head/InfoType is '遅延'"),
    (_changed(VXSE53, "<Serial>1</Serial>", "<Serial>一</Serial>"), "Head/Serial is not a number: '一'"),
    (_changed(VXSE53, "<ReportDateTime>2021-02-16T23:02:00+09:00</ReportDateTime>",
              "<ReportDateTime>2021-02-16T23:02:00</ReportDateTime>"), "Head/ReportDateTime has no UTC offset"),
    (_changed(VXSE53, "<OriginTime>2021-02-16T22:59:00+09:00", "<OriginTime>16日22時59分"),
     "OriginTime is not an ISO 8601 time"),
    (_changed(VXSE53, "<Code>0420800</Code><MaxInt>1</MaxInt>", "<Code>0420800</Code><MaxInt>5</MaxInt>"),
     "City 0420800: MaxInt '5' is not a 震度"),
    (_changed(VXSE53, "<Body xmlns=\"http://xml.kishou.go.jp/jmaxml1/body/seismology1/\"",
              "<Body xmlns=\"http://xml.kishou.go.jp/jmaxml1/body/volcanology1/\""), "no Body"),
])
def test_what_is_not_a_vxse5x_bulletin_is_refused_with_its_reason(document, reason):
    assert reason in refused(document)


# --- 震度 thresholds ---------------------------------------------------------------------------------

@pytest.mark.parametrize("written, canonical", [
    ("5-", "5-"), ("5+", "5+"), ("5弱", "5-"), ("5強", "5+"), ("６弱", "6-"), ("６強", "6+"), ("震度５弱", "5-"),
    ("震度6強以上", "6+"), ("5弱以上", "5-"), (" 4 ", "4"), ("７", "7"), ("1", "1"), ("５－", "5-"), ("６＋", "6+"),
])
def test_parse_threshold(written, canonical):
    assert jb.parse_threshold(written) == canonical


@pytest.mark.parametrize("written", ["5", "6", "0", "8", "", "五弱", "5中", "震度", "5.5", "震度５弱以上未入電"])
def test_parse_threshold_refuses(written):
    with pytest.raises(ValueError, match="not a 震度"):
        jb.parse_threshold(written)


def test_rank_orders_intensities():
    assert [jb.rank(s) for s in jb.INTENSITIES] == list(range(1, 10))
    assert jb.rank("5+") > jb.rank("5-") and jb.rank("7") > jb.rank("6+")
    with pytest.raises(ValueError):
        jb.rank("5弱")   # rank takes the canonical form only: parse_threshold first


# --- the Atom feed -----------------------------------------------------------------------------------

def test_feed_entries():
    entries = feed.entries(FEED.read_bytes())
    assert [(e.title, e.kind) for e in entries] == [
        ("震源・震度に関する情報", "VXSE53"), ("震度速報", "VXSE51"), ("噴火に関する火山観測報", None),
        ("震源・震度に関する情報", "VXSE53"), ("震度速報", "VXSE51"), ("津波警報・注意報・予報a", None),
        ("震源・震度に関する情報", "VXSE53"), ("震源に関する情報", "VXSE52")]
    first = entries[0]
    assert first == feed.Entry(
        id="https://www.data.jma.go.jp/developer/xml/data/20210217190220_0_VXSE53_010000.xml",
        title="震源・震度に関する情報", updated="2021-02-17T19:02:20Z",
        url="https://www.data.jma.go.jp/developer/xml/data/20210217190220_0_VXSE53_010000.xml", kind="VXSE53")
    assert entries[2].url.endswith("_VFVO50_460100.xml") and entries[5].url.endswith("_VTSE41_010000.xml")


def test_earthquake_entries_name_bulletins_that_parse_as_their_kind():
    quakes = feed.earthquake_entries(FEED.read_bytes())
    assert [e.kind for e in quakes] == ["VXSE53", "VXSE51", "VXSE53", "VXSE51", "VXSE53", "VXSE52"]
    for entry in quakes:
        b = parsed(entry.url.rsplit("/", 1)[1])
        assert b.kind == entry.kind and b.title == entry.title


@pytest.mark.parametrize("url, kind", [
    ("https://www.data.jma.go.jp/developer/xml/data/20210216140226_0_VXSE53_010000.xml", "VXSE53"),
    ("https://www.data.jma.go.jp/developer/xml/data/20210217164825_0_VXSE51_010000.xml", "VXSE51"),
    ("https://www.data.jma.go.jp/developer/xml/data/20210217140847_0_VXSE52_010000.xml", "VXSE52"),
    ("20230410231623_04156158_VXSE53.xml", "VXSE53"),
    ("https://www.data.jma.go.jp/developer/xml/data/20210217151204_0_VTSE41_010000.xml", None),
    ("https://www.data.jma.go.jp/developer/xml/data/20210217181026_0_VFVO50_460100.xml", None),
    ("https://www.data.jma.go.jp/developer/xml/data/20210217181026_0_VXSE56_010000.xml", None),   # 活動状況
    ("https://www.data.jma.go.jp/developer/xml/data/20210217181026_0_VXSE62_010000.xml", None),   # 長周期
    ("https://www.data.jma.go.jp/developer/xml/data/VXSE53_notes.html", None),
])
def test_kind_from_the_file_name(url, kind):
    assert feed.kind_of(url) == kind


def test_a_feed_that_is_not_one_is_refused():
    with pytest.raises(feed.BadFeed, match="not XML"):
        feed.entries(b"<feed")
    with pytest.raises(feed.BadFeed, match="not an Atom feed"):
        feed.entries(data(VXSE53))
    no_link = FEED.read_bytes().replace(
        b'<link type="application/xml" href="https://www.data.jma.go.jp/developer/xml/data/20210217190009_0_VXSE51'
        b'_010000.xml"/>', b"", 1)
    with pytest.raises(feed.BadFeed, match="entry 2: no link"):
        feed.entries(no_link)
    assert feed.entries(b'<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title></feed>') == []


# --- `anpi jma parse` --------------------------------------------------------------------------------

def jma(*args):
    return subprocess.run([*ANPI, "jma", *args], capture_output=True, text=True, cwd=ROOT, timeout=60)


@pytest.mark.parametrize("name", ["20210216140226_0_VXSE53_010000.xml", "32-35_06_06_100915_VXSE53.xml",
                                  "32-39_11_01_120615_VXSE51.xml"])
def test_cli_prints_the_bulletin_as_one_json_line(name):
    done = jma("parse", str(JMA / name))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.endswith("\n") and done.stdout.count("\n") == 1
    assert json.loads(done.stdout) == parsed(name).to_json()
    assert "震源・震度に関する情報" in done.stdout or "震度速報" in done.stdout   # ensure_ascii=False


def test_cli_errors_are_one_line_and_exit_2(tmp_path):
    missing = tmp_path / "nope.xml"
    done = jma("parse", str(missing))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"anpi jma parse: {missing}: cannot be read (No such file or directory)\n"

    bad = tmp_path / "laughs.xml"
    bad.write_bytes(BILLION_LAUGHS)
    done = jma("parse", str(bad))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (f"anpi jma parse: {bad}: refused: the document has a DOCTYPE declaration (XML from "
                           "the network is read without DTDs or entities)\n")

    done = jma("parse", str(FEED))
    assert done.returncode == 2
    assert done.stderr.startswith(f"anpi jma parse: {FEED}: not a JMA bulletin") and done.stderr.count("\n") == 1

    done = jma("parse", str(tmp_path))
    assert done.returncode == 2 and done.stderr.startswith(f"anpi jma parse: {tmp_path}: cannot be read (")

    assert jma().returncode == 2   # an action is required (argparse's usage line)
