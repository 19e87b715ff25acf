"""One JMA earthquake bulletin (気象庁防災情報XML) read into a plain record: `parse(data) -> Bulletin`.

    VXSE51 震度速報                 the 細分区域 (areas) that felt 震度3 or more; no hypocenter yet
    VXSE52 震源に関する情報          the hypocenter and magnitude; no intensities
    VXSE53 震源・震度に関する情報    the hypocenter, and the strongest 震度 per area and per city (市町村等)

What a roll-call decides on is read strictly, and anything else is refused with a `BadBulletin`
whose text is one line: the kind, Control/Status (a 訓練 drill must never pass for a real quake),
Head/InfoType (発表 / 訂正 / 取消), the EventID that ties a bulletin to its event, the report time and
every 震度. What only describes the quake (the epicentre's name, magnitude, depth) is read
leniently: a value JMA marks unknown, or one that cannot be read, is None, never a refusal, so a
6強 bulletin is not lost for want of a magnitude.

The document comes from the network: one with a DOCTYPE is refused before anything in it is
parsed, so no entity is ever declared, let alone expanded (`untrusted_xml`).
"""
from __future__ import annotations

import math
import re
import unicodedata
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from xml.parsers import expat

INTENSITIES = ("1", "2", "3", "4", "5-", "5+", "6-", "6+", "7")   # JMA's MaxInt values, weakest first
_RANK = {shindo: number for number, shindo in enumerate(INTENSITIES, 1)}

JMX = "{http://xml.kishou.go.jp/jmaxml1/}"
HEAD = "{http://xml.kishou.go.jp/jmaxml1/informationBasis1/}"
SEIS = "{http://xml.kishou.go.jp/jmaxml1/body/seismology1/}"
EB = "{http://xml.kishou.go.jp/jmaxml1/elementBasis1/}"

# Control/Title -> (kind, the Head/InfoKind that must go with it). Both must agree: JMA's other
# seismology bulletins (VXSE56 活動状況, VXSE60 地震回数, VXSE61 震源要素更新, VXSE62 長周期地震動…)
# share the namespaces but not these titles.
KINDS = {
    "震度速報": ("VXSE51", "震度速報"),
    "震源に関する情報": ("VXSE52", "震源速報"),
    "震源・震度に関する情報": ("VXSE53", "地震情報"),
}
STATUSES = ("通常", "訓練", "試験")
INFO_TYPES = ("発表", "訂正", "取消")

# A station that measured 震度5弱 or more by its own estimate but whose value has not reached JMA:
# most often one the quake itself cut off. It counts as "5-" (its area's and city's strongest is at
# least that): a roll-call must not wait for a station that the quake may have knocked out.
NOT_RECEIVED = "震度５弱以上未入電"
NOT_RECEIVED_AS = "5-"

# Headline codeType -> which map of the Bulletin its areas belong to.
_AREA_CODES = "地震情報／細分区域"
_CITY_CODES = "気象・地震・火山情報／市町村等"

# ISO 6709 as JMA writes it: latitude, longitude in decimal degrees, then the height in metres
# (negative: below the surface; "+0" for ごく浅い), or no height when the depth is unknown.
_COORDINATE = re.compile(r"([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)?/")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class BadBulletin(ValueError):
    """Not a VXSE51/52/53 bulletin, or not one that can be read; `str(error)` is the one line to show."""


class _Doctype(Exception):
    """Raised from inside expat at a DOCTYPE, to stop it there."""


@dataclass(frozen=True, slots=True)
class Hypocenter:
    name: str | None             # Hypocenter/Area/Name: 福島県沖, カムチャツカ半島付近
    magnitude: float | None      # None when JMA gives NaN (Ｍ不明, Ｍ８を超える巨大地震)
    depth_km: int | None         # 0 for ごく浅い; None when unknown (深さ不明)
    latitude: float | None       # None when JMA gives no position (震源要素不明)
    longitude: float | None

    def to_json(self) -> dict:
        return {"name": self.name, "magnitude": self.magnitude, "depth_km": self.depth_km,
                "latitude": self.latitude, "longitude": self.longitude}


@dataclass(frozen=True, slots=True)
class Bulletin:
    event_id: str                   # Head/EventID: the same for every bulletin about one quake
    kind: str                       # VXSE51 | VXSE52 | VXSE53
    title: str                      # Control/Title
    status: str                     # 通常 | 訓練 (drill) | 試験 (test)
    info_type: str                  # 発表 | 訂正 (replaces the earlier one) | 取消 (withdraws it)
    serial: int | None              # Head/Serial; None when empty (VXSE51, VXSE52)
    origin_time: str | None         # Body/Earthquake/OriginTime as written; None in VXSE51 and 取消
    report_time: str                # Head/ReportDateTime as written
    hypocenter: Hypocenter | None
    # 細分区域 code -> strongest 震度 (a value of INTENSITIES); 市町村等 code -> strongest 震度.
    # Empty when the bulletin gives none (VXSE52, 取消; VXSE51 has areas only).
    areas: dict[str, str] = field(hash=False)
    cities: dict[str, str] = field(hash=False)
    text: str | None                # Body/Text, else Head/Headline/Text: what a 取消 says
    report_at_ms: int               # report_time in epoch milliseconds, for the engine
    origin_at_ms: int | None

    def to_json(self) -> dict:
        return {"event_id": self.event_id, "kind": self.kind, "title": self.title, "status": self.status,
                "info_type": self.info_type, "serial": self.serial, "origin_time": self.origin_time,
                "report_time": self.report_time,
                "hypocenter": None if self.hypocenter is None else self.hypocenter.to_json(),
                "areas": dict(self.areas), "cities": dict(self.cities), "text": self.text}


def rank(shindo: str) -> int:
    """1 for "1" up to 9 for "7": intensities compare by rank (as strings "5+" < "5-" would mislead)."""
    try:
        return _RANK[shindo]
    except KeyError:
        raise ValueError(f"not a 震度 (seismic intensity): {shindo!r}") from None


def label(shindo: str) -> str:
    """How people write a 震度: "5-" -> "5弱", "6+" -> "6強", "4" -> "4"."""
    return shindo.replace("-", "弱").replace("+", "強")


def parse_threshold(text: str) -> str:
    """A 震度 as people write it -> its canonical form: "5弱", "震度５強", "６弱以上", "5-" -> "5-", "6+"…

    A bare "5" or "6" is refused: since 1996 each is two intensities (弱 and 強), and guessing which
    would start, or skip, a roll-call."""
    s = unicodedata.normalize("NFKC", str(text)).strip().replace("−", "-")  # NFKC: ５ -> 5, ＋ -> +
    s = s.removeprefix("震度").removesuffix("以上").strip()   # a threshold is "at or above" anyway
    s = s.replace("弱", "-").replace("強", "+")
    if s not in _RANK:
        raise ValueError(f"not a 震度 (seismic intensity): {text!r}; give one of 1 2 3 4 5- 5+ 6- 6+ 7 "
                         "(5弱 5強 6弱 6強 as well)")
    return s


def untrusted_xml(data: bytes, error: type[ValueError] = BadBulletin) -> ET.Element:
    """The root element of `data`, XML from the network. A document with a DOCTYPE is refused: a
    first pass stops at the declaration's first byte, before any entity can be declared (billion
    laughs, external entities), and the tree is only built from a document without one."""
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"XML is read from bytes, not {type(data).__name__}")

    def refuse(*_):
        raise _Doctype

    probe = expat.ParserCreate()
    probe.StartDoctypeDeclHandler = refuse
    probe.EntityDeclHandler = refuse   # cannot come without a DOCTYPE; refused all the same
    try:
        probe.Parse(bytes(data), True)
    except _Doctype:
        raise error("refused: the document has a DOCTYPE declaration (XML from the network is read "
                    "without DTDs or entities)") from None
    except expat.ExpatError as e:
        raise error(f"not XML ({e})") from None
    try:
        return ET.fromstring(bytes(data))
    except ET.ParseError as e:   # not expected after the probe; one line all the same
        raise error(f"not XML ({e})") from None


def parse(data: bytes) -> Bulletin:
    """The bulletin in `data` (the bytes of one VXSE51/52/53 document), or `BadBulletin` saying why not."""
    root = untrusted_xml(data)
    if root.tag != JMX + "Report":
        raise BadBulletin(f"not a JMA bulletin (気象庁防災情報XML): the root element is {_name(root.tag)}")
    control = _required(root, JMX + "Control", "Control")
    head = _required(root, HEAD + "Head", "Head (of the informationBasis1 namespace)")
    title = _text(control, JMX + "Title")
    if title not in KINDS:
        raise BadBulletin(f"not an earthquake bulletin (VXSE51/52/53): Control/Title is {title!r}")
    kind, info_kind = KINDS[title]
    if _text(head, HEAD + "InfoKind") != info_kind:
        raise BadBulletin(f"Control/Title {title} goes with Head/InfoKind {info_kind}, not "
                          f"{_text(head, HEAD + 'InfoKind')!r}")
    body = _required(root, SEIS + "Body", "Body (of the seismology1 namespace)")

    status = _one_of(_text(control, JMX + "Status"), STATUSES, "Control/Status")
    info_type = _one_of(_text(head, HEAD + "InfoType"), INFO_TYPES, "Head/InfoType")
    event_id = _text(head, HEAD + "EventID")
    if not event_id:
        raise BadBulletin("no Head/EventID: a bulletin that cannot be tied to its quake")
    serial_text = _text(head, HEAD + "Serial")
    if serial_text and not serial_text.isdigit():
        raise BadBulletin(f"Head/Serial is not a number: {serial_text!r}")
    report_time = _text(head, HEAD + "ReportDateTime")
    if not report_time:
        raise BadBulletin("no Head/ReportDateTime")
    quake = body.find(SEIS + "Earthquake")
    origin_time = _text(quake, SEIS + "OriginTime") or None

    if info_type == "取消":
        # A 取消 withdraws what the earlier bulletin said: nothing of it may be acted on, even if a
        # future JMA format repeated the content in the cancellation.
        hypocenter, areas, cities = None, {}, {}
    else:
        hypocenter = _hypocenter(quake)
        areas, cities = _observed(body)
        _add_headline(head, areas, cities)

    text = _text(body, SEIS + "Text") or _text(head.find(HEAD + "Headline"), HEAD + "Text") or None
    return Bulletin(event_id=event_id, kind=kind, title=title, status=status, info_type=info_type,
                    serial=int(serial_text) if serial_text else None, origin_time=origin_time,
                    report_time=report_time, hypocenter=hypocenter, areas=areas, cities=cities, text=text,
                    report_at_ms=_epoch_ms(report_time, "Head/ReportDateTime"),
                    origin_at_ms=None if origin_time is None else _epoch_ms(origin_time, "OriginTime"))


def _observed(body: ET.Element) -> tuple[dict[str, str], dict[str, str]]:
    """(areas, cities) from Body/Intensity/Observation/Pref/Area[/City]."""
    areas: dict[str, str] = {}
    cities: dict[str, str] = {}
    for area in body.iterfind(f"{SEIS}Intensity/{SEIS}Observation/{SEIS}Pref/{SEIS}Area"):
        strongest = _strength(area, "Area")
        for city in area.iterfind(SEIS + "City"):
            shindo = _strength(city, "City")
            if shindo is not None:
                _keep_strongest(cities, _code(city, "City"), shindo)
                # an area is as strong as its strongest city: this lifts it only where a city's
                # station is 未入電 (its MaxInt already covers every received value)
                strongest = shindo if strongest is None else max(strongest, shindo, key=rank)
        if strongest is not None:
            _keep_strongest(areas, _code(area, "Area"), strongest)
    return areas, cities


def _strength(element: ET.Element, what: str) -> str | None:
    """An Area's or City's strongest 震度: its MaxInt, raised to "5-" when its Condition is
    震度５弱以上未入電 (even over a MaxInt of 4: the 4 is only what has arrived); None with neither."""
    written = _text(element, SEIS + "MaxInt")
    if written and written not in _RANK:
        raise BadBulletin(f"{what} {_text(element, SEIS + 'Code')}: MaxInt {written!r} is not a 震度")
    shindo = written or None
    if _text(element, SEIS + "Condition") == NOT_RECEIVED:
        shindo = NOT_RECEIVED_AS if shindo is None else max(shindo, NOT_RECEIVED_AS, key=rank)
    return shindo


def _add_headline(head: ET.Element, areas: dict[str, str], cities: dict[str, str]) -> None:
    """The Headline's lists (震度3 or more, by 震度) into `areas` and `cities`. They repeat what the
    Body says; read too so that an area or city named only there is not missed."""
    for item in head.iterfind(f"{HEAD}Headline/{HEAD}Information/{HEAD}Item"):
        name = _text(item, f"{HEAD}Kind/{HEAD}Name")
        codes = item.find(HEAD + "Areas")
        target = {_AREA_CODES: areas, _CITY_CODES: cities}.get(codes.get("codeType")) if codes is not None else None
        if target is None:
            continue
        if name == NOT_RECEIVED:
            shindo = NOT_RECEIVED_AS
        else:
            try:
                shindo = parse_threshold(name)
            except ValueError:
                raise BadBulletin(f"Headline: {name!r} is not a 震度") from None
        for area in codes.iterfind(HEAD + "Area"):
            _keep_strongest(target, _code(area, "Headline Area", HEAD), shindo)


def _keep_strongest(found: dict[str, str], code: str, shindo: str) -> None:
    if code not in found or rank(shindo) > rank(found[code]):
        found[code] = shindo


def _hypocenter(quake: ET.Element | None) -> Hypocenter | None:
    area = None if quake is None else quake.find(f"{SEIS}Hypocenter/{SEIS}Area")
    if area is None:
        return None
    latitude = longitude = depth = None
    coordinate = area.find(EB + "Coordinate")
    if coordinate is not None:
        written = _COORDINATE.fullmatch((coordinate.text or "").strip())
        if written:
            latitude, longitude = float(written[1]), float(written[2])
            if "ごく浅い" in coordinate.get("description", ""):
                depth = 0
            elif written[3] is not None:
                depth = round(-float(written[3]) / 1000)   # metres of height -> km of depth
    return Hypocenter(name=_text(area, SEIS + "Name") or None, magnitude=_magnitude(quake.find(EB + "Magnitude")),
                      depth_km=depth, latitude=latitude, longitude=longitude)


def _magnitude(element: ET.Element | None) -> float | None:
    if element is None or element.get("condition") == "不明":
        return None
    try:
        value = float((element.text or "").strip())
    except ValueError:
        return None
    return None if math.isnan(value) else value


def _epoch_ms(written: str, where: str) -> int:
    try:
        moment = datetime.fromisoformat(written)
    except ValueError:
        raise BadBulletin(f"{where} is not an ISO 8601 time: {written!r}") from None
    if moment.tzinfo is None:
        raise BadBulletin(f"{where} has no UTC offset: {written!r}")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _code(element: ET.Element, what: str, ns: str = SEIS) -> str:
    code = _text(element, ns + "Code")
    if not code:
        raise BadBulletin(f"{what} {_text(element, ns + 'Name')!r} has no Code")
    return code


def _one_of(value: str, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise BadBulletin(f"{where} is {value!r}, not one of {' '.join(allowed)}")
    return value


def _required(parent: ET.Element, tag: str, what: str) -> ET.Element:
    found = parent.find(tag)
    if found is None:
        raise BadBulletin(f"not a VXSE51/52/53 bulletin: no {what}")
    return found


def _text(parent: ET.Element | None, path: str) -> str:
    """The stripped text at `path`, "" when absent (JMA pads some values: "<MaxInt>4 </MaxInt>")."""
    found = None if parent is None else parent.find(path)
    return "" if found is None else (found.text or "").strip()


def _name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] + (f" (namespace {tag[1:tag.index('}')]})" if tag.startswith("{") else "")
