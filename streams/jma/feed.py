"""JMA's Atom feed of bulletins (eqvol.xml, 地震火山: the last minutes; eqvol_l.xml: the last days)
read into plain records: `entries(atom) -> list[Entry]`, and `earthquake_entries(atom)` for the
VXSE51/52/53 among them.

Each entry announces one bulletin by its URL; the file name says its type, e.g.
    https://www.data.jma.go.jp/developer/xml/data/20210216140226_0_VXSE53_010000.xml
    (the time JMA wrote it, a serial, the type, the issuing office)
so a poller fetches only the bulletins it reads, and never the volcano (VFVO..) or tsunami
(VTSE..) ones that share the feed.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from streams.jma.bulletin import KINDS, untrusted_xml

ATOM = "{http://www.w3.org/2005/Atom}"
EARTHQUAKE_KINDS = tuple(kind for kind, _ in KINDS.values())   # VXSE51, VXSE52, VXSE53
_TYPE = re.compile(r"_([A-Z]{4}\d{2})(?:_\d+)?\.xml$")   # …_VXSE53_010000.xml, …_VXSE53.xml


class BadFeed(ValueError):
    """Not an Atom feed of bulletins; `str(error)` is the one line to show."""


@dataclass(frozen=True, slots=True)
class Entry:
    id: str              # the entry's <id> (JMA gives the bulletin's URL)
    title: str           # the bulletin's title: 震源・震度に関する情報, 津波警報・注意報・予報a…
    updated: str         # <updated> as written (UTC, "…Z")
    url: str             # where the bulletin is: the <link type="application/xml">
    kind: str | None     # VXSE51 | VXSE52 | VXSE53 from the URL's file name; None for other bulletins


def entries(atom: bytes) -> list[Entry]:
    """Every entry of the feed, in the feed's order (JMA's: newest first)."""
    root = untrusted_xml(atom, BadFeed)
    if root.tag != ATOM + "feed":
        raise BadFeed(f"not an Atom feed: the root element is {root.tag}")
    return [_entry(number, element) for number, element in enumerate(root.iterfind(ATOM + "entry"), 1)]


def earthquake_entries(atom: bytes) -> list[Entry]:
    """The entries that announce a VXSE51, VXSE52 or VXSE53 bulletin."""
    return [entry for entry in entries(atom) if entry.kind is not None]


def kind_of(url: str) -> str | None:
    """VXSE51 | VXSE52 | VXSE53 when the URL's file name says so, else None."""
    found = _TYPE.search(url.split("?", 1)[0].split("#", 1)[0])
    return found[1] if found and found[1] in EARTHQUAKE_KINDS else None


def _entry(number: int, element: ET.Element) -> Entry:
    # Strict: an entry without its id, time or link is not JMA's feed as documented, and a poller
    # told so at once is better than one that skips bulletins without a word.
    fields = {name: (element.findtext(ATOM + name) or "").strip() for name in ("id", "title", "updated")}
    links = element.findall(ATOM + "link")
    xml_links = [link for link in links if link.get("type") == "application/xml"] or links
    url = (xml_links[0].get("href") or "").strip() if xml_links else ""
    missing = [name for name, value in (*fields.items(), ("link", url)) if not value]
    if missing:
        raise BadFeed(f"entry {number}: no {', '.join(missing)}")
    return Entry(id=fields["id"], title=fields["title"], updated=fields["updated"], url=url, kind=kind_of(url))
