"""LIFF login: the ID token the page got from `liff.getIDToken()`, verified by LINE itself.

The browser's word is never taken for who it is: the token goes to LINE's verify endpoint
(POST {LINE API}/oauth2/v2.1/verify, form fields id_token and client_id), and only LINE's answer
counts: `sub` is the userId, `aud` must be our channel, `exp` must be in the future.
"""
from __future__ import annotations

import logging

import aiohttp

log = logging.getLogger("anpi.mypage")
VERIFY_PATH = "/oauth2/v2.1/verify"
MAX_TOKEN_CHARS = 4096   # real ID tokens are about 1 kB; anything far larger is not one


class Refused(Exception):
    """LINE did not vouch for the token (or could not be asked). No detail reaches the browser."""


async def verify(http: aiohttp.ClientSession, line_api: str, channel_id: str, id_token: str, now_s: float) -> str:
    """The LINE userId the token was issued to."""
    if not isinstance(id_token, str) or not id_token or len(id_token) > MAX_TOKEN_CHARS:
        raise Refused("no token")
    try:
        async with http.post(line_api.rstrip("/") + VERIFY_PATH, data={"id_token": id_token, "client_id": channel_id},
                             timeout=aiohttp.ClientTimeout(total=10)) as r:
            body = await r.json(content_type=None)
            status = r.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        log.warning("LIFF verify: LINE could not be asked (%s)", type(error).__name__)
        raise Refused("unreachable") from None
    if status != 200 or not isinstance(body, dict):
        log.info("LIFF verify: LINE refused an ID token (HTTP %s)", status)  # never the token itself
        raise Refused("refused")
    sub, aud, exp = body.get("sub"), body.get("aud"), body.get("exp")
    # LINE checks these too; checking again costs nothing and guards against a wrong line_api
    if str(aud) != str(channel_id):
        raise Refused("audience")
    if not isinstance(exp, (int, float)) or exp <= now_s:
        raise Refused("expired")
    if not isinstance(sub, str) or not sub:
        raise Refused("subject")
    return sub
