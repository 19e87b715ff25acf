"""Behind a TLS proxy: who the client is and whether it came by https, believed from a trusted proxy only.

`ANPI_TRUSTED_PROXIES`: the addresses or networks (comma-separated, e.g. `127.0.0.1,10.0.0.0/8`) of
the reverse proxies in front of anpi. A request whose peer is one of them takes its scheme from
`X-Forwarded-Proto` (so `request.secure` is true and cookies get `Secure`) and its remote address
from `X-Forwarded-For`: the nearest address there that is not a trusted proxy (what the login
lockout counts by). From anyone else those headers are ignored: a client can write them. Empty, the
default: no proxy is trusted.
"""
from __future__ import annotations

import ipaddress
import os

from aiohttp import web

ENV = "ANPI_TRUSTED_PROXIES"
Networks = tuple  # of ipaddress networks


def trusted(value: str | None = None) -> Networks:
    """The networks in `value` (default: the environment's); ValueError with the setting's name if one is not."""
    value = os.environ.get(ENV, "") if value is None else value
    networks = []
    for part in (p.strip() for p in value.split(",")):
        if part:
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"{ENV}: {part!r} is not an IP address or network (e.g. 127.0.0.1 or 10.0.0.0/8)") \
                    from None
    return tuple(networks)


def _is_trusted(address: str | None, networks: Networks) -> bool:
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        return False
    return any(ip in n for n in networks)


def client(remote: str | None, forwarded_for: str | None, networks: Networks) -> str | None:
    """The client's address: the peer, or, from a trusted peer, the nearest untrusted hop it names."""
    if not _is_trusted(remote, networks) or not forwarded_for:
        return remote
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, networks):
            return hop
    return hops[0] if hops else remote


def middleware(networks: Networks | None = None):
    """An aiohttp middleware applying the rule above (networks default to the environment's)."""
    networks = trusted() if networks is None else networks

    @web.middleware
    async def forwarded(request: web.Request, handler):
        if networks and _is_trusted(request.remote, networks):
            proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
            changes = {"remote": client(request.remote, request.headers.get("X-Forwarded-For"), networks)}
            if proto in ("http", "https"):
                changes["scheme"] = proto
            request = request.clone(**changes)
        return await handler(request)
    return forwarded
