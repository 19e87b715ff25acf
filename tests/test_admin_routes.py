"""The admin screen over real HTTP, on both backends (tests/backends.py: the embedded store's file, or
Redis as `anpi admin serve` reads it): accounts, sessions, CSRF, tenant isolation on every route, the
read side after real engine steps, and a call-queue outcome that the engine acts on."""
from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agents import notices as notices_rules
from agents import readside as rs
from agents.clock import HOUR, MINUTE
from agents.routes import OUTBOX
from backends import admin_server, backend, keys_of, redis_url, side_of  # noqa: F401 (backend: the fixture)
from linesim import user_id_for
from schemas import effects as fx
from schemas.events import Acknowledge, Ok, Register, Resolve, RollCall, Withdraw
from schemas.settings import GroupSettings, MemberSettings, Schedule
from streams import cli, codec, forwarded
from streams.admin import accounts, pages
from streams.demo.town import DEMO_LOGIN, demo_login
from streams.embedded import readside
from streams.embedded.engine import Engine
from streams.embedded.store import Store
from streams.notices import book

START = 1_796_050_800_000  # 2026-12-01T00:00+09:00
DAY = 24 * HOUR
A, B = "city-a", "city-b"
PASSWORD = "correct horse battery"
LOCKED_OUT = "この端末からは15分間ログインできません"
TOKYO = Schedule("1d", 9 * 60, "Asia/Tokyo", None)

WATCH_SILENT = user_id_for("watch-silent")      # never answers: staff are called
WATCH_OK = user_id_for("watch-ok")              # answers each check within minutes
WATCH_LATE = user_id_for("watch-late")          # never answers either: a second case in the queue
NOTIFY_SILENT = user_id_for("notify-silent")    # never answers: the family is told
NOTIFY_FORGETS = user_id_for("notify-forgets")  # answers the resend
FAMILY = user_id_for("family")
GROUP = "C" + "0" * 31 + "1"
PHONES = {WATCH_SILENT: "090-1111-0001", WATCH_OK: "090-1111-0002", WATCH_LATE: "090-1111-0003"}


@dataclass
class World:
    """Two tenants in one store, the engine of tenant A, and two clocks the tests move."""
    store: Store
    engine: Engine
    side: object = None  # the backend the test runs on (tests/backends.Side), once serving
    now: list[int] = field(default_factory=lambda: [START])          # the engine's time
    wall: list[int] = field(default_factory=lambda: [START])         # real time: sessions, lockouts

    def step(self, at: int) -> list:
        self.now[0] = max(self.now[0], at)
        return self.engine.step(at)

    def ok(self, member: str, at: int, group: str | None = None) -> None:
        subjects = [group, member] if group else [member]
        self.store.accept(A, None, [(s, Ok(at, member, group)) for s in subjects])


def build_world(path: str, days: int = 2) -> World:
    """Tenant A's residents through `days` of checks: OKs, a resend answered, a staff call and a
    contacts notice on day 2 at 12:00, and a つながり group; tenant B exists with its own staff."""
    store = Store(path)
    for member, service in ((WATCH_SILENT, "watch"), (WATCH_OK, "watch"), (WATCH_LATE, "watch"),
                            (NOTIFY_SILENT, "notify"), (NOTIFY_FORGETS, "notify")):
        settings = MemberSettings(member, service, TOKYO, PHONES.get(member),
                                  (FAMILY,) if service == "notify" else ())
        store.accept(A, None, [(member, Register(START, settings))])
    store.accept(A, None, [(GROUP, Register(START, GroupSettings(GROUP, Schedule("1d", 8 * 60, "Asia/Tokyo", None),
                                                                 (WATCH_OK, NOTIFY_FORGETS, FAMILY))))])
    store.accept(B, None, [(user_id_for("b-resident"), Register(START, MemberSettings(
        user_id_for("b-resident"), "watch", TOKYO, "090-9999-0000")))])
    world = World(store, Engine(store, A))
    for day in range(days):
        base = START + day * DAY
        world.step(base + 8 * HOUR + MINUTE)               # the group's post
        world.ok(WATCH_OK, base + 8 * HOUR + 10 * MINUTE, GROUP)
        world.step(base + 9 * HOUR + MINUTE)               # the morning checks (and yesterday's resends)
        world.ok(WATCH_OK, base + 9 * HOUR + 5 * MINUTE)
        if day >= 1:
            world.ok(NOTIFY_FORGETS, base + 9 * HOUR + 30 * MINUTE)  # answers the resend
        world.step(base + 12 * HOUR + 30 * MINUTE)         # escalations of yesterday's checks at 12:00
    Engine(store, B).step(START + 9 * HOUR + MINUTE)
    world.now[0] = START + (days - 1) * DAY + 13 * HOUR
    return world


HASHED = accounts.hash_password(PASSWORD)  # one hash for every account: argon2 is slow on purpose


@asynccontextmanager
async def serving(world: World, kind: str):
    """The admin screen of backend `kind` over the world, with an admin and an operator of tenant A
    and an admin of tenant B; `world.side` is the backend (its read side, staff, notices)."""
    async with side_of(kind, world, {A: "Asia/Tokyo", B: "Asia/Tokyo"}) as side:
        for tenant, login, role in ((A, "a-admin", "admin"), (A, "a-operator", "operator"), (B, "b-admin", "admin")):
            await side.add_staff(tenant, login, role, HASHED, START)
        world.side = side
        async with admin_server(side) as (server, admin):
            yield server, admin


async def case_row(world: World, member: str, cycle: int = 1) -> dict | None:
    """The call queue's row of a case, as the backend's read side has it once it has caught up."""
    await world.side.sync()
    return await world.side.read.case(A, member, cycle)


async def audit_log(world: World, looks: bool = True) -> list[dict]:
    """Tenant A's audit log, newest first, without the rows of the accounts the test began with
    (and with `looks` False, without the rows that only say who looked at the call queue)."""
    return [r for r in await world.side.audit_log(A) if r["login"] != "(test)" and (looks or r["action"] != "calls.view")]


class Browser:
    """A user agent with its own cookie jar that does not follow redirects (tests look at them)."""

    def __init__(self, server: TestServer, headers: dict | None = None):
        self.server = server
        # behind a TLS proxy the browser is on https: it sends the Secure cookies (to the proxy)
        secure = str(server.make_url("/")) if (headers or {}).get("X-Forwarded-Proto") == "https" else None
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=secure),
                                          headers=headers)

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def get(self, path: str) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.get(self.url(path), allow_redirects=False) as r:
            return r.status, await r.text(), r

    async def post(self, path: str, data: dict) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.post(self.url(path), data=data, allow_redirects=False) as r:
            return r.status, await r.text(), r

    async def login(self, tenant: str, login: str, password: str = PASSWORD) -> tuple[int, str, aiohttp.ClientResponse]:
        _, page, _ = await self.get(f"/admin/{tenant}/login")
        return await self.post(f"/admin/{tenant}/login", {"csrf": csrf_in(page), "login": login, "password": password})

    async def csrf(self, tenant: str) -> str:
        status, page, _ = await self.get(f"/admin/{tenant}/overview")
        assert status == 200
        return csrf_in(page)

    def session_id(self) -> str | None:
        return next((c.value for c in self.http.cookie_jar if c.key == "anpi_admin"), None)

    async def close(self) -> None:
        await self.http.close()


def csrf_in(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def run(test):
    """Run `test(world, server, admin_app)` against a fresh world of tenants A and B, on each backend."""
    def wrapper(tmp_path, backend, *args, **kwargs):
        world = build_world(str(tmp_path / "anpi.db"))

        async def go():
            async with serving(world, backend) as (server, app):
                await test(world, server, app, *args, **kwargs)
        asyncio.run(go())
        world.store.close()
    wrapper.__name__ = test.__name__
    return wrapper


def behind_proxy(test):
    """As `run`, with the test client's address a trusted proxy (ANPI_TRUSTED_PROXIES=127.0.0.1)."""
    inner = run(test)

    def wrapper(tmp_path, backend, monkeypatch):
        monkeypatch.setenv(forwarded.ENV, "127.0.0.1")
        inner(tmp_path, backend)
    wrapper.__name__ = test.__name__
    return wrapper


def from_address(server: TestServer, address: str, proto: str = "https") -> Browser:
    """A browser at `address`, as a TLS proxy in front of anpi says."""
    return Browser(server, {"X-Forwarded-For": address, "X-Forwarded-Proto": proto})


def inbox(store: Store, tenant: str) -> list:
    return [codec.event_from_obj(json.loads(p.event)) for p in store.pending(tenant, 0, limit=100_000)]


# --- logging in and out --------------------------------------------------------------------------------


@run
async def test_a_good_login_opens_the_overview_with_a_safe_cookie(world, server, app):
    user = Browser(server)
    status, _, response = await user.login(A, "a-admin")
    assert status == 303 and response.headers["Location"] == "/admin/city-a/overview"
    cookie = response.cookies["anpi_admin"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/admin"
    assert int(cookie["max-age"]) > 0
    status, page, response = await user.get("/admin/city-a/overview")
    assert status == 200 and "利用状況" in page
    assert response.headers["Cache-Control"] == "no-store" and response.headers["X-Frame-Options"] == "DENY"
    assert "script-src" not in response.headers["Content-Security-Policy"]  # default-src 'none': no script at all
    await user.close()


@run
async def test_a_wrong_password_or_an_unknown_login_is_refused_and_only_known_logins_are_written_down(world, server, app):
    user = Browser(server)
    status, page, response = await user.login(A, "a-admin", "not the password")
    assert status == 401 and "ログインIDかパスワードが違います" in page and "anpi_admin" not in response.cookies
    status, page, _ = await user.login(A, "my secret typed in the wrong box", PASSWORD)
    assert status == 401
    status, _, _ = await user.login(A, "b-admin")  # tenant B's account does not open tenant A
    assert status == 401
    log = await audit_log(world)
    assert [r["login"] for r in log] == ["(不明なID)", "(不明なID)", "a-admin"]
    assert all("secret" not in json.dumps(r, ensure_ascii=False) for r in log)
    assert (await user.get("/admin/city-a/overview"))[0] == 302  # still not logged in
    await user.close()


@run
async def test_five_wrong_passwords_lock_the_account_for_fifteen_minutes(world, server, app):
    user = Browser(server)
    for _ in range(accounts.MAX_FAILURES - 1):
        assert (await user.login(A, "a-operator", "wrong password"))[0] == 401
    status, page, _ = await user.login(A, "a-operator", "wrong password")
    assert status == 401 and LOCKED_OUT in page
    status, page, _ = await user.login(A, "a-operator")  # even the right password, while locked
    assert status == 401 and LOCKED_OUT in page and user.session_id() is None
    assert (await user.login(A, "a-admin"))[0] == 303  # the lock is per account
    world.wall[0] += 14 * MINUTE
    assert (await Browser(server).login(A, "a-operator"))[0] == 401
    world.wall[0] += MINUTE
    fresh = Browser(server)
    assert (await fresh.login(A, "a-operator"))[0] == 303
    assert (await world.side.staff.users(A))[1]["failed"] == 0
    await user.close()
    await fresh.close()


@behind_proxy
async def test_a_strangers_wrong_passwords_lock_their_address_out_but_not_the_accounts_owner(world, server, app):
    stranger, owner = from_address(server, "203.0.113.9"), from_address(server, "198.51.100.7")
    for _ in range(accounts.MAX_FAILURES):
        assert (await stranger.login(A, "a-operator", "wrong password"))[0] == 401
    status, page, _ = await stranger.login(A, "a-operator")  # even the right password, from there
    assert status == 401 and LOCKED_OUT in page and stranger.session_id() is None
    status, _, response = await owner.login(A, "a-operator")  # the owner, from the office
    assert status == 303 and response.cookies["anpi_admin"]["secure"]
    world.wall[0] += accounts.LOCK_MS
    assert (await stranger.login(A, "a-operator"))[0] == 303
    for browser in (stranger, owner):
        await browser.close()


@behind_proxy
async def test_an_address_that_guesses_at_many_logins_is_locked_out_of_all_of_them(world, server, app):
    sprayer, other = from_address(server, "203.0.113.10"), from_address(server, "198.51.100.8")
    results = [(await sprayer.login(A, f"guess-{i}", "wrong password"))[0] for i in range(accounts.SOURCE_MAX_FAILURES)]
    assert results == [401] * accounts.SOURCE_MAX_FAILURES
    status, page, _ = await sprayer.login(A, "a-admin")
    assert status == 401 and LOCKED_OUT in page
    assert (await other.login(A, "a-admin"))[0] == 303
    for browser in (sprayer, other):
        await browser.close()


@behind_proxy
async def test_the_login_page_answers_the_same_for_a_known_and_an_unknown_login(world, server, app):
    pages_seen = {}
    for i, login in enumerate(("a-operator", "no-such-person")):
        browser = from_address(server, f"203.0.113.{20 + i}")
        answers = []
        for _ in range(accounts.MAX_FAILURES + 1):
            status, page, response = await browser.login(A, login, "wrong password")
            answers.append((status, re.sub(r'value="[^"]*"', 'value=""', page), sorted(response.cookies)))
        pages_seen[login] = answers
        await browser.close()
    assert pages_seen["a-operator"] == pages_seen["no-such-person"]
    assert LOCKED_OUT in pages_seen["no-such-person"][-1][1] and LOCKED_OUT not in pages_seen["no-such-person"][0][1]


@behind_proxy
async def test_the_session_cookie_is_secure_behind_a_trusted_tls_proxy(world, server, app):
    status, _, response = await from_address(server, "198.51.100.9").login(A, "a-admin")
    assert status == 303 and response.cookies["anpi_admin"]["secure"]
    status, _, response = await from_address(server, "198.51.100.9", proto="http").login(A, "a-admin")
    assert status == 303 and not response.cookies["anpi_admin"]["secure"]


@run
async def test_forwarded_headers_from_an_untrusted_peer_are_ignored(world, server, app):
    liar = from_address(server, "198.51.100.11")   # no trusted proxy here: the headers are the client's own
    for _ in range(accounts.MAX_FAILURES):
        await liar.login(A, "a-operator", "wrong password")
    status, _, response = await from_address(server, "198.51.100.12").login(A, "a-operator")
    assert status == 401   # the same peer whatever it writes: still locked out
    status, _, response = await liar.login(A, "a-admin")
    assert status == 303 and not response.cookies["anpi_admin"]["secure"]
    await liar.close()


@run
async def test_an_administrator_unlocks_a_locked_account(world, server, app):
    user, admin = Browser(server), Browser(server)
    for _ in range(accounts.MAX_FAILURES):
        await user.login(A, "a-operator", "wrong password")
    await admin.login(A, "a-admin")
    status, page, _ = await admin.get("/admin/city-a/users")
    assert "ロック中" in page
    await admin.post("/admin/city-a/users/unlock", {"csrf": csrf_in(page), "login": "a-operator"})
    assert (await user.login(A, "a-operator"))[0] == 303
    await user.close()
    await admin.close()


@run
async def test_staff_answer_a_disclosure_request_from_the_call_queue_and_each_look_is_audited(world, server, app):
    world.step(START + DAY + 13 * HOUR)   # the staff call of the silent 見守り resident is open
    admin = Browser(server)
    await admin.login(A, "a-admin")
    _, queue, _ = await admin.get("/admin/city-a/calls")
    assert f"/admin/city-a/residents/{WATCH_SILENT}" in queue
    status, page, _ = await admin.get(f"/admin/city-a/residents/{WATCH_SILENT}")
    assert status == 200 and "開示" in page and "見守り" in page and "0001" in page
    assert 'id="cases"' in page and "「お元気ですか？」をお送りしました" in page
    status, body, response = await admin.get(f"/admin/city-a/residents/{WATCH_SILENT}/export.json")
    held = json.loads(body)
    assert status == 200 and "attachment" in response.headers["Content-Disposition"]
    assert held["member"] == WATCH_SILENT and held["state"]["settings"]["service"] == "watch"
    assert [c["kind"] for c in held["cases"]] == [fx.STAFF_CALL]
    assert {fx.CHECK_SENT, fx.STAFF_CALL} <= {e["effect"] for e in held["history"]}
    looks = [(r["login"], r["action"], r["target"]) for r in await audit_log(world) if r["action"].startswith("resident")]
    assert looks == [("a-admin", "resident.export", WATCH_SILENT), ("a-admin", "resident.view", WATCH_SILENT)]
    assert (await admin.get("/admin/city-a/residents/U" + "9" * 32))[0] == 404
    await admin.close()


@run
async def test_staff_keep_whom_they_call_find_them_by_name_and_a_withdrawal_removes_it(world, server, app):
    world.step(START + DAY + 13 * HOUR)   # the silent 見守り resident's staff call is open
    admin = Browser(server)
    await admin.login(A, "a-admin")
    _, page, _ = await admin.get(f"/admin/city-a/residents/{WATCH_SILENT}")
    profile = {"name": "山田 花子", "kana": "やまだ はなこ", "address": "我孫子市 緑1-2-3",
               "note": "耳が遠いので、ゆっくり話す", "key_holder": "隣の佐藤さん"}
    status, _, _ = await admin.post(f"/admin/city-a/residents/{WATCH_SILENT}/profile",
                                    {"csrf": csrf_in(page), **profile, "note": "あ" * 501})
    assert status == 400
    status, _, r = await admin.post(f"/admin/city-a/residents/{WATCH_SILENT}/profile", {"csrf": csrf_in(page), **profile})
    assert status == 303
    _, queue, _ = await admin.get("/admin/city-a/calls")      # the caller sees whom they call
    assert "山田 花子" in queue and "耳が遠い" in queue
    _, found, _ = await admin.get("/admin/city-a/calls?q=はなこ")   # found by name in the queue
    _, other, _ = await admin.get("/admin/city-a/calls?q=佐々木")
    assert f'data-member="{WATCH_SILENT}"' in found and f'data-member="{WATCH_SILENT}"' not in other
    status, sheet, r = await admin.get("/admin/city-a/calls.csv")   # and can take the list away
    assert status == 200 and sheet.startswith("\ufeff氏名,") and "山田 花子" in sheet and PHONES[WATCH_SILENT] in sheet
    for query in ("ヤマダ", "やまだ 緑", "ﾊﾅｺ"):                 # as staff type it
        _, found, _ = await admin.get(f"/admin/city-a/residents?q={query}")
        assert f"/admin/city-a/residents/{WATCH_SILENT}" in found, query
    _, found, _ = await admin.get("/admin/city-a/residents?q=佐々木")
    assert 'id="none"' in found
    _, found, _ = await admin.get("/admin/city-a/residents?q=０９０－１１１１－０００１")   # by the number a caller gives
    assert f"/admin/city-a/residents/{WATCH_SILENT}" in found and "山田 花子" in found
    _, found, _ = await admin.get(f"/admin/city-a/residents?q={PHONES[WATCH_OK]}")     # no profile: the id
    assert f"/admin/city-a/residents/{WATCH_OK}" in found
    _, body, _ = await admin.get(f"/admin/city-a/residents/{WATCH_SILENT}/export.json")
    assert json.loads(body)["profile"]["key_holder"] == "隣の佐藤さん"
    actions = [r["action"] for r in await audit_log(world)]
    assert {"resident.profile", "residents.search", "calls.view", "calls.csv"} <= set(actions)
    if world.side.redis is None:   # sealed at rest: no name or address in the file
        world.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        data = open(world.store.path, "rb").read()
        assert "山田".encode() not in data and "緑1-2-3".encode() not in data
    else:
        raw = await world.side.redis.hgetall(f"anpi:{{{A}}}:profiles")
        assert raw and all("山田".encode() not in v for v in raw.values())
    # the resident withdraws: their profile goes with everything else
    world.store.accept(A, None, [(WATCH_SILENT, Withdraw(START + DAY + 14 * HOUR, WATCH_SILENT))])
    world.step(START + DAY + 14 * HOUR)
    await world.side.sync()   # the read side has the effects as the topic keeps them
    while True:   # the sender's work: every message out, the goodbye last
        batch = world.store.unsent(A, OUTBOX)
        if not batch:
            break
        world.store.mark_sent([seq for seq, _ in batch])
    await world.side.sync()
    assert (await admin.get(f"/admin/city-a/residents/{WATCH_SILENT}"))[0] == 404
    _, found, _ = await admin.get("/admin/city-a/residents?q=ヤマダ")
    assert 'id="none"' in found
    _, found, _ = await admin.get(f"/admin/city-a/residents?q={PHONES[WATCH_SILENT]}")
    assert 'id="none"' in found
    await admin.close()


@run
async def test_logout_ends_the_session_for_good(world, server, app):
    user = Browser(server)
    await user.login(A, "a-admin")
    old = user.session_id()
    csrf = await user.csrf(A)
    status, _, response = await user.post("/admin/city-a/logout", {"csrf": csrf})
    assert status == 303 and response.headers["Location"].startswith("/admin/city-a/login")
    assert user.session_id() is None
    status, _, response = await user.get("/admin/city-a/overview")
    assert status == 302 and response.headers["Location"] == "/admin/city-a/login"
    replay = Browser(server)  # the old cookie, kept by someone: it opens nothing
    replay.http.cookie_jar.update_cookies({"anpi_admin": old}, response_url=server.make_url("/admin/"))
    assert (await replay.get("/admin/city-a/overview"))[0] == 302
    await user.close()
    await replay.close()


@run
async def test_a_session_ends_after_thirty_idle_minutes(world, server, app):
    user = Browser(server)
    await user.login(A, "a-admin")
    world.wall[0] += 20 * MINUTE
    assert (await user.get("/admin/city-a/overview"))[0] == 200  # a page view moves the deadline on
    world.wall[0] += 29 * MINUTE
    assert (await user.get("/admin/city-a/overview"))[0] == 200
    world.wall[0] += 31 * MINUTE
    assert (await user.get("/admin/city-a/overview"))[0] == 302
    await user.close()


# --- CSRF ------------------------------------------------------------------------------------------------


@run
async def test_a_post_without_the_sessions_csrf_token_changes_nothing(world, server, app):
    user = Browser(server)
    await user.login(A, "a-admin")
    before = len(inbox(world.store, A))
    case = {"member": WATCH_SILENT, "cycle": "1", "outcome": rs.REACHED}
    for form in (case, {**case, "csrf": "forged"}, {**case, "csrf": ""}):
        status, page, _ = await user.post("/admin/city-a/calls/record", form)
        assert status == 403 and "操作を受け付けられませんでした" in page
    other = Browser(server)  # another session's valid token is not this session's
    await other.login(A, "a-operator")
    status, _, _ = await user.post("/admin/city-a/calls/record", {**case, "csrf": await other.csrf(A)})
    assert status == 403
    status, _, _ = await user.post("/admin/city-a/users", {"login": "intruder", "role": "admin"})
    assert status == 403
    assert (await case_row(world, WATCH_SILENT))["last_action"] is None
    assert len(inbox(world.store, A)) == before
    assert not await world.side.staff.exists(A, "intruder")
    # the login form has its own token (a double-submit cookie): a cross-site login is refused
    fresh = Browser(server)
    status, _, _ = await fresh.post("/admin/city-a/login", {"login": "a-admin", "password": PASSWORD, "csrf": "x"})
    assert status == 403 and fresh.session_id() is None
    for u in (user, other, fresh):
        await u.close()


# --- tenant isolation, on every route ---------------------------------------------------------------------


def _routes() -> list[tuple[str, str, bool]]:
    """Every route of the admin application: (method, path, public)."""
    app = web.Application()
    pages.add_routes(app.router)
    out = []
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        out.append((route.method, route.resource.canonical, getattr(route.handler, "anpi_public", False)))
    return out


ROUTES = _routes()
GUARDED = [(m, p) for m, p, public in ROUTES if not public]
NOTICE = {"kind": "disaster", "title": "避難指示", "body": "高台へ避難してください。", "services": "watch",
          "ok_button": "1", "draft": "0" * 31 + "1"}
FORMS = {"/{tenant}/calls/record": {"member": WATCH_SILENT, "cycle": "1", "outcome": rs.REACHED},
         "/{tenant}/users": {"login": "intruder", "role": "admin"},
         "/{tenant}/users/unlock": {"login": "a-operator"},
         "/{tenant}/notices/preview": NOTICE,
         "/{tenant}/notices/send": NOTICE,
         "/{tenant}/settings/look": {"terms": "よその自治体が書いた利用規約"},
         "/{tenant}/settings/message": {"check_text": "乗っ取りました", "quotes": "よその名言"},
         "/{tenant}/settings/timezone": {"timezone": "America/New_York"},
         "/{tenant}/settings/limit": {"limit": "168"},
         "/{tenant}/settings/retention": {"retention": "30"},
         "/{tenant}/settings/privacy": {"privacy": "よその自治体の文面"},
         "/{tenant}/residents/{member}/profile": {"name": "よその人が書いた名前"},
         "/{tenant}/residents/import": {"commit": "1"},
         "/{tenant}/settings/intervals": {"forbid_long": "1"},
         "/{tenant}/settings/hook": {"hook_url": "https://stranger.example/hook"},
         "/{tenant}/line/code": {},
         "/{tenant}/line/duty": {"start": "9", "end": "17"},
         "/{tenant}/line/unlink": {},
         "/{tenant}/settings/line": {"channel_secret": "stranger-secret-0123456789",
                                     "channel_access_token": "stranger-token-0123456789abcdef"},
         "/{tenant}/rollcalls/{rollcall}/clear": {},
         "/{tenant}/rollcalls/start": {"whole": "1", "nonce": "stranger-nonce-0123456789"},
         "/{tenant}/rollcalls/area": {"subject": WATCH_SILENT, "area": ""}}


async def a_notice(world: World) -> str:
    """A notice of tenant A, sent, for the routes that show one ({notice})."""
    draft, _ = notices_rules.draft("disaster", "A市だけの避難指示", "本文", ["watch"], ok_button=True)
    notice_id = book.new_id()
    await world.side.notices.commit(A, notice_id, draft, [WATCH_SILENT, WATCH_LATE], [], "a-admin", START)
    return notice_id


async def a_rollcall(world: World) -> str:
    """A drill roll-call of tenant A's whole town, for the routes that show one ({rollcall})."""
    rollcall = "jma-drill-only-for-a"
    world.store.accept(A, None, [("", RollCall(world.now[0] + 60_000, rollcall, None, True))])
    world.step(world.now[0] + 60_000)
    await world.side.sync()
    return rollcall


def test_every_admin_route_but_the_front_door_is_per_tenant_and_only_the_login_is_public():
    assert len(GUARDED) >= 10
    for method, path, public in ROUTES:
        assert path == "/" or path.startswith("/{tenant}/"), path
        assert not public or path in ("/", "/{tenant}/login"), path
    assert all(p.startswith("/{tenant}/") for _, p in GUARDED)  # a guarded route without a tenant would be refused
    assert set(FORMS) == {p for m, p in GUARDED if m == "POST" and p != "/{tenant}/logout"}


@pytest.mark.parametrize("method,path", GUARDED, ids=[f"{m} {p}" for m, p in GUARDED])
def test_a_user_of_another_tenant_gets_not_found_on_every_route(tmp_path, backend, method, path):
    world = build_world(str(tmp_path / "anpi.db"), days=2)

    async def go():
        async with serving(world, backend) as (server, app):
            notice_id = await a_notice(world)
            rollcall = await a_rollcall(world)
            stranger = Browser(server)
            assert (await stranger.login(B, "b-admin"))[0] == 303
            token = await stranger.csrf(B)   # a valid token of the stranger's own session
            before = await _tenant_a_rows(world)
            url = "/admin" + path.replace("{tenant}", A).replace("{notice}", notice_id).replace("{rollcall}", rollcall) \
                .replace("{member}", WATCH_SILENT)
            if method == "GET":
                status, page, _ = await stranger.get(url)
            else:
                status, page, _ = await stranger.post(url, {**FORMS.get(path, {}), "csrf": token})
            assert status == 404 and "ページが見つかりません" in page
            assert WATCH_SILENT not in page and "090-1111" not in page and "a-admin" not in page
            assert "A市だけの避難指示" not in page
            if "{notice}" in path:   # nor through the stranger's own tenant's address
                status, page, _ = await stranger.get("/admin" + path.replace("{tenant}", B).replace("{notice}", notice_id))
                assert status == 404 and "A市だけの避難指示" not in page
            assert await _tenant_a_rows(world) == before     # nothing of tenant A changed
            # and without any session: GETs go to the login page, POSTs are refused
            anonymous = Browser(server)
            if method == "GET":
                status, _, response = await anonymous.get(url)
                assert status == 302 and response.headers["Location"] == f"/admin/{A}/login"
            else:
                status, _, _ = await anonymous.post(url, FORMS.get(path, {}))
                assert status == 403
            assert await _tenant_a_rows(world) == before
            # the tenant's own staff do reach it (the route is real, not refused for everyone)
            own = Browser(server)
            await own.login(A, "a-admin")
            if method == "GET":
                assert (await own.get(url))[0] in (200, 302)
            for u in (stranger, anonymous, own):
                await u.close()
    asyncio.run(go())
    world.store.close()


async def _tenant_a_rows(world: World) -> tuple:
    """Everything tenant A has: its inbox, and the backend's rows (SQLite) or keys (Redis) of it."""
    if world.side.redis is not None:
        return len(inbox(world.store, A)), await keys_of(world.side.redis, f"anpi:{{{A}}}:*")
    db = world.store.db
    return (len(inbox(world.store, A)),
            db.execute("SELECT COUNT(*) FROM admin_audit WHERE tenant = ? AND action NOT LIKE 'login%'", (A,)).fetchone(),
            db.execute("SELECT * FROM rs_cases WHERE tenant = ? ORDER BY member", (A,)).fetchall(),
            db.execute("SELECT login, role, failed, locked_until FROM admin_users WHERE tenant = ?", (A,)).fetchall(),
            db.execute("SELECT * FROM notices WHERE tenant = ? ORDER BY id", (A,)).fetchall(),
            db.execute("SELECT COUNT(*) FROM notice_recipients").fetchone(),
            db.execute("SELECT * FROM tenant_look WHERE tenant = ?", (A,)).fetchall(),
            db.execute("SELECT * FROM tenant_settings WHERE tenant = ?", (A,)).fetchall(),
            db.execute("SELECT * FROM admin_line WHERE tenant = ?", (A,)).fetchall(),
            db.execute("SELECT * FROM admin_line_codes WHERE tenant = ?", (A,)).fetchall(),
            db.execute("SELECT * FROM rs_rolls WHERE tenant = ? ORDER BY rollcall, member", (A,)).fetchall())


@run
async def test_operators_work_the_queue_but_only_administrators_manage_accounts(world, server, app):
    operator = Browser(server)
    await operator.login(A, "a-operator")
    assert (await operator.get("/admin/city-a/calls"))[0] == 200
    for path in ("/admin/city-a/users", "/admin/city-a/audit"):
        status, page, _ = await operator.get(path)
        assert status == 403 and "管理者だけ" in page
    status, _, _ = await operator.post("/admin/city-a/users", {"csrf": await operator.csrf(A), "login": "x",
                                                               "role": "admin"})
    assert status == 403 and not await world.side.staff.exists(A, "x")
    admin = Browser(server)
    await admin.login(A, "a-admin")
    status, page, _ = await admin.post("/admin/city-a/users", {"csrf": await admin.csrf(A), "login": "new-staff",
                                                               "role": "operator"})
    assert status == 200 and "いまだけ" in page
    password = re.search(r'<strong style="[^"]*">([^<]+)</strong>', page).group(1)
    assert (await Browser(server).login(A, "new-staff", password))[0] == 303
    for u in (operator, admin):
        await u.close()


# --- the read side --------------------------------------------------------------------------------------


def test_the_read_side_agrees_with_the_engines_effects_and_states_after_real_steps(tmp_path):
    world = build_world(str(tmp_path / "anpi.db"), days=4)
    db, effects = world.store.db, world.store.effects(A)
    by_day: Counter = Counter()
    for e in effects:
        if e.effect in rs.DAILY:
            by_day[(rs.day_of(e.at, "Asia/Tokyo"), e.effect)] += 1
    stored = {(day, kind): n for day, kinds in readside.daily(db, A, "2026-01-01", "2027-12-31").items()
              for kind, n in kinds.items() if kind != rs.ANSWERED}
    # two 見守り calls at 12:00, and at 15:00 the 安否通知 case nobody in the family took up
    assert stored == dict(by_day) and by_day[("2026-12-02", fx.STAFF_CALL)] == 3
    # answered before escalation, counted on the day the check went out
    sent_day = {(e.subject, e.cycle): rs.day_of(e.at, "Asia/Tokyo") for e in effects if e.effect == fx.CHECK_SENT}
    answered = Counter(sent_day[(e.subject, e.cycle)] for e in effects if e.effect == fx.CONFIRMED)
    assert {d: k[rs.ANSWERED] for d, k in readside.daily(db, A, "2026-01-01", "2027-12-31").items()
            if rs.ANSWERED in k} == dict(answered)
    labels = Counter(rs.label(s) for _, s in world.store.states(A))
    assert readside.labels(db, A) == dict(labels)
    assert labels["watch:escalated"] == 2 and labels["notify:escalated"] == 1 and labels["watch:idle"] == 1
    escalations = {}  # one case per cycle: a staff call on a cycle that told contacts takes it over
    for e in effects:
        if e.effect in fx.ESCALATIONS and escalations.get((e.subject, e.cycle)) != fx.STAFF_CALL:
            escalations[(e.subject, e.cycle)] = e.effect
    rows = db.execute("SELECT member, cycle, kind FROM rs_cases WHERE tenant = ?", (A,)).fetchall()
    assert set(rows) == {(*key, kind) for key, kind in escalations.items()}
    assert readside.labels(db, B) == {"watch:sent": 1}  # tenants are counted apart
    # an older file without the read side gets it rebuilt, to the same numbers, when opened
    before = [db.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3").fetchall() for t in readside.TABLES]
    for table in readside.TABLES:
        db.execute(f"DROP TABLE {table}")
    world.store.close()
    again = Store(str(tmp_path / "anpi.db"))
    assert [again.db.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3").fetchall() for t in readside.TABLES] == before
    again.close()


def test_messages_marked_sent_count_towards_the_months_quota_once(tmp_path):
    world = build_world(str(tmp_path / "anpi.db"), days=2)
    store = world.store
    from agents.messages import SENDS_MESSAGES
    rows = store.unsent(A, SENDS_MESSAGES)
    while rows:
        store.mark_sent(seq for seq, _ in rows)
        store.mark_sent(seq for seq, _ in rows)  # a repeat (a restart) counts nothing more
        rows = store.unsent(A, SENDS_MESSAGES)
    effects = store.effects(A)
    expected = sum(rs.billed(e, 3) for e in effects)  # the group has three members
    c = Counter(e.effect for e in effects)
    # one per check and resend, one family member told, and each group message counts the group's three
    assert c[fx.GROUP_CHECK_POSTED] == 2 and c[fx.GROUP_UNCONFIRMED] == 1 and c[fx.CONTACTS_NOTIFIED] == 1
    assert expected == c[fx.CHECK_SENT] + c[fx.CHECK_RESENT] + 1 + 3 * 3
    assert readside.usage(store.db, A, "2026-12") == expected
    store.close()


@run
async def test_the_overview_shows_todays_numbers_from_the_read_side(world, server, app):
    user = Browser(server)
    await user.login(A, "a-operator")
    status, page, _ = await user.get("/admin/city-a/overview")
    assert status == 200
    today = {k: int(v.replace(",", "")) for k, v in re.findall(r'data-key="(\w+)">([\d,]+)<', page)}
    # day 2: a new check only for the one who answered (one cycle open at most), the other four resent;
    # OKs from watch-ok and from the one who answered the resend; 2 staff calls, 1 family told
    assert today == {"sent": 1, "ok": 2, "resent": 4, "staff": 2, "contacts": 1, "posted": 1}
    assert "職員からの電話を待っている方が <strong>2人</strong>" in page
    # day 1's answered share includes the resend answered on day 2: it counts for the day the check went out
    assert page.count("<rect") == 2 and "確認 5件のうち 2件が連絡前に応答" in page and "確認 1件のうち 1件" in page
    await user.close()


# --- the call queue -------------------------------------------------------------------------------------


@run
async def test_reached_and_fine_commits_a_resolve_and_the_engine_closes_the_case(world, server, app):
    user = Browser(server)
    await user.login(A, "a-operator")
    status, page, _ = await user.get("/admin/city-a/calls")
    assert status == 200 and PHONES[WATCH_SILENT] in page and PHONES[WATCH_LATE] in page
    assert "1日と4時間" in page  # checked at 09:00 yesterday; it is 13:00
    status, _, response = await user.post("/admin/city-a/calls/record", {
        "csrf": csrf_in(page), "member": WATCH_SILENT, "cycle": "1", "outcome": rs.REACHED})
    assert status == 303 and "done=reached" in response.headers["Location"]
    assert inbox(world.store, A)[-1] == Resolve(world.now[0], WATCH_SILENT, 1)
    row = await case_row(world, WATCH_SILENT)
    assert row["status"] == "open" and row["last_action"] == rs.REACHED  # until the engine has it
    assert "反映中" in (await user.get("/admin/city-a/calls"))[1]
    effects = world.step(world.now[0] + 1_000)
    assert [e.effect for e in effects if e.subject == WATCH_SILENT] == [fx.RESOLVED_AFTER_ESCALATION]
    row = await case_row(world, WATCH_SILENT)
    assert row["status"] == "closed" and row["outcome"] == rs.REACHED
    page = (await user.get("/admin/city-a/calls"))[1]
    closed = page.split('id="closed-cases"')[1]
    assert WATCH_SILENT in closed and "連絡がつき無事" in closed
    assert WATCH_SILENT not in page.split('id="open-cases"')[1].split("</table>")[0]
    log = await audit_log(world, looks=False)
    assert log[0]["login"] == "a-operator" and log[0]["action"] == "case.reached"
    assert log[0]["target"] == f"{WATCH_SILENT}:1"
    # recording on a closed case changes nothing
    status, _, response = await user.post("/admin/city-a/calls/record", {
        "csrf": csrf_in(page), "member": WATCH_SILENT, "cycle": "1", "outcome": rs.NO_ANSWER})
    assert "gone=1" in response.headers["Location"] and len(await audit_log(world, looks=False)) == len(log)
    await user.close()


@run
async def test_no_answer_and_a_visit_keep_the_case_open_and_emergency_services_close_it(world, server, app):
    user = Browser(server)
    await user.login(A, "a-admin")
    csrf = await user.csrf(A)
    queued = len(inbox(world.store, A))
    for outcome in (rs.NO_ANSWER, rs.VISIT):
        await user.post("/admin/city-a/calls/record", {"csrf": csrf, "member": WATCH_LATE, "cycle": "1",
                                                       "outcome": outcome})
        row = await case_row(world, WATCH_LATE)
        assert row["status"] == "open" and row["last_action"] == outcome
    await user.post("/admin/city-a/calls/record", {"csrf": csrf, "member": WATCH_LATE, "cycle": "1",
                                                   "outcome": rs.EMERGENCY})
    row = await case_row(world, WATCH_LATE)
    assert row["status"] == "closed" and row["outcome"] == rs.EMERGENCY
    assert len(inbox(world.store, A)) == queued  # handed over: nothing for the engine to do
    actions = [r["action"] for r in await audit_log(world)][:3]
    assert actions == ["case.emergency", "case.visit", "case.no_answer"]
    page = (await user.get("/admin/city-a/audit"))[1]
    assert "対応を記録：救急・警察に連絡" in page and PASSWORD not in page
    await user.close()


@run
async def test_the_notify_page_shows_how_many_of_those_told_will_go_and_look(world, server, app):
    user = Browser(server)
    await user.login(A, "a-operator")
    page = (await user.get("/admin/city-a/escalations"))[1]
    assert 'class="acks"><span class="muted">まだ' in page
    world.store.accept(A, None, [(NOTIFY_SILENT, Acknowledge(world.now[0], NOTIFY_SILENT, FAMILY, 1))])
    world.step(world.now[0] + 1_000)
    page = (await user.get("/admin/city-a/escalations"))[1]
    assert 'class="acks">1人<br><span class="muted">12月2日（水）13:00</span>' in page
    await user.close()


# --- nobody is left waiting: reasons, reminders, help first, 安否通知 cases closed by staff --------------


def open_rows(page: str, table: str = "open-cases") -> list[str]:
    """The members of an open table's rows, top to bottom."""
    body = page.split(f'id="{table}"')[1].split("</table>")[0] if f'id="{table}"' in page else ""
    return re.findall(r'<tr data-member="([^"]+)"', body)


@run
async def test_a_family_that_does_not_go_brings_the_case_to_the_call_queue_with_reminders(world, server, app):
    user = Browser(server)
    await user.login(A, "a-operator")
    assert NOTIFY_SILENT in open_rows((await user.get("/admin/city-a/escalations"))[1], "open-notices")
    day2 = START + DAY
    effects = world.step(day2 + 15 * HOUR)   # told at 12:00, nobody said 「見に行きます」 by 15:00
    assert [(e.effect, e.data) for e in effects if e.subject == NOTIFY_SILENT] == [(fx.STAFF_CALL, fx.UNCLAIMED)]
    page = (await user.get("/admin/city-a/calls"))[1]
    assert NOTIFY_SILENT in open_rows(page) and "連絡先の方が動けていません" in page and "連絡先1人に通知済み" in page
    assert NOTIFY_SILENT not in open_rows((await user.get("/admin/city-a/escalations"))[1], "open-notices")
    world.step(day2 + 18 * HOUR)   # the 見守り calls of 12:00 are reminded at 18:00
    world.step(day2 + 21 * HOUR)   # and this one at 21:00
    row = await case_row(world, NOTIFY_SILENT)
    assert (row["kind"], row["reason"], row["reminders"]) == (fx.STAFF_CALL, fx.UNCLAIMED, 1)
    assert [(await case_row(world, m))["reminders"] for m in (WATCH_SILENT, WATCH_LATE)] == [1, 1]
    assert "再通知 1回" in (await user.get("/admin/city-a/calls"))[1]
    await user.close()


@run
async def test_a_help_goes_to_the_top_of_the_call_queue_and_an_ok_does_not_close_it(world, server, app):
    from schemas.events import Help
    at = world.now[0]
    world.store.accept(A, None, [(WATCH_OK, Help(at, WATCH_OK))])
    effects = world.step(at + 1_000)
    assert [(e.effect, e.data) for e in effects if e.subject == WATCH_OK] == [
        (fx.STAFF_CALL, fx.HELP), (fx.HELP_REQUESTED, fx.HELP_TO_STAFF)]
    world.ok(WATCH_OK, at + 2_000)   # a tap on OK cannot say that someone who asked for help is safe
    world.step(at + 3_000)
    user = Browser(server)
    await user.login(A, "a-operator")
    page = (await user.get("/admin/city-a/calls"))[1]
    assert open_rows(page)[0] == WATCH_OK and open_rows(page)[1:] == [WATCH_SILENT, WATCH_LATE]
    assert '<span class="badge danger">助けを求めています</span>' in page and PHONES[WATCH_OK] in page
    cycle = 3  # a new cycle: today's check (cycle 2) was answered
    status, _, response = await user.post("/admin/city-a/calls/record", {
        "csrf": csrf_in(page), "member": WATCH_OK, "cycle": str(cycle), "outcome": rs.REACHED})
    assert status == 303 and inbox(world.store, A)[-1] == Resolve(world.now[0], WATCH_OK, cycle)
    effects = world.step(world.now[0] + 1_000)
    assert [e.effect for e in effects if e.subject == WATCH_OK] == [fx.RESOLVED_AFTER_ESCALATION]
    assert (await case_row(world, WATCH_OK, cycle))["outcome"] == rs.REACHED
    await user.close()


@run
async def test_a_help_after_the_family_was_told_marks_the_case_urgent_wherever_it_is(world, server, app):
    from schemas.events import Help
    at = world.now[0]   # 13:00: the family was told at 12:00
    world.store.accept(A, None, [(NOTIFY_SILENT, Help(at, NOTIFY_SILENT))])
    effects = world.step(at + 1_000)
    assert [(e.effect, e.data) for e in effects if e.subject == NOTIFY_SILENT] == [
        (fx.HELP_REQUESTED, fx.HELP_TO_CONTACTS)]   # the family already knows: no second notice
    user = Browser(server)
    await user.login(A, "a-operator")
    page = (await user.get("/admin/city-a/escalations"))[1]
    row = page.split(f'<tr data-member="{NOTIFY_SILENT}"')[1].split("</tr>")[0]
    assert 'class="urgent"' in row and "助けを求めています" in row
    world.step(START + DAY + 15 * HOUR)   # nobody said 「見に行きます」: staff are called, and it goes first
    page = (await user.get("/admin/city-a/calls"))[1]
    assert open_rows(page) == [NOTIFY_SILENT, WATCH_SILENT, WATCH_LATE]
    row = page.split(f'<tr data-member="{NOTIFY_SILENT}"')[1].split("</tr>")[0]
    assert "助けを求めています" in row and "連絡先の方が動けていません" in row
    await user.close()


@run
async def test_staff_close_a_notify_case_and_the_family_is_told_all_is_well(world, server, app):
    user = Browser(server)
    await user.login(A, "a-operator")
    page = (await user.get("/admin/city-a/escalations"))[1]
    assert '<input type="hidden" name="back" value="escalations">' in page   # its form comes back here
    status, _, response = await user.post("/admin/city-a/calls/record", {
        "csrf": csrf_in(page), "member": NOTIFY_SILENT, "cycle": "1", "outcome": rs.REACHED, "back": "escalations"})
    assert status == 303 and response.headers["Location"].startswith("/admin/city-a/escalations?done=reached")
    assert inbox(world.store, A)[-1] == Resolve(world.now[0], NOTIFY_SILENT, 1)
    assert "無事を記録済み・反映中" in (await user.get("/admin/city-a/escalations"))[1]
    effects = world.step(world.now[0] + 1_000)
    mine = [(e.effect, e.to) for e in effects if e.subject == NOTIFY_SILENT]
    assert mine == [(fx.RESOLVED_AFTER_ESCALATION, None), (fx.ALL_CLEAR, (FAMILY,))]
    row = await case_row(world, NOTIFY_SILENT)
    assert (row["status"], row["outcome"]) == ("closed", rs.REACHED)
    page = (await user.get("/admin/city-a/escalations"))[1]
    assert NOTIFY_SILENT not in open_rows(page, "open-notices") and "連絡がつき無事" in page
    await user.close()


@run
async def test_a_resident_who_answers_after_the_call_closes_the_case_by_themselves(world, server, app):
    world.ok(WATCH_SILENT, world.now[0])
    world.step(world.now[0] + 1_000)
    row = await case_row(world, WATCH_SILENT)
    assert row["status"] == "closed" and row["outcome"] == rs.RESIDENT
    world.ok(NOTIFY_SILENT, world.now[0])
    world.step(world.now[0] + 1_000)
    assert (await case_row(world, NOTIFY_SILENT))["status"] == "closed"
    user = Browser(server)
    await user.login(A, "a-operator")
    page = (await user.get("/admin/city-a/escalations"))[1]
    assert "いま、対応中の件はありません" in page and "ご本人から応答あり" in page
    page = (await user.get("/admin/city-a/groups"))[1]
    assert "3人" in page
    await user.close()


# --- secrets stay out of logs; the CLI; the demo's login ----------------------------------------------------


@run
async def test_passwords_and_session_ids_never_reach_the_log(world, server, app):
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler, root = Keep(level=logging.DEBUG), logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        user = Browser(server)
        await user.login(A, "a-admin", "a wrong password!")
        await user.login(A, "a-admin")
        await user.post("/admin/city-a/calls/record", {"csrf": "forged", "member": WATCH_SILENT, "cycle": "1",
                                                       "outcome": rs.REACHED})
        session_id = user.session_id()
        await user.close()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    text = "\n".join(records)
    assert session_id and records  # something was logged, and none of it is a secret
    for secret in (PASSWORD, "a wrong password!", session_id, PHONES[WATCH_SILENT]):
        assert secret not in text


def test_the_cli_creates_an_account_with_the_password_from_the_environment_or_stdin(tmp_path, monkeypatch, capsys):
    db = str(tmp_path / "anpi.db")
    monkeypatch.setenv("ANPI_ADMIN_PASSWORD", PASSWORD)
    assert cli.main(["admin", "create-user", "--db", db, "--tenant", A, "--login", "first", "--role", "admin"]) == 0
    monkeypatch.delenv("ANPI_ADMIN_PASSWORD")
    monkeypatch.setattr("sys.stdin", io.StringIO("another long password\n"))
    assert cli.main(["admin", "create-user", "--db", db, "--tenant", A, "--login", "second", "--role", "operator"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["admin", "create-user", "--db", db, "--tenant", A, "--login", "third"]) == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("yet another long one\n"))
    assert cli.main(["admin", "create-user", "--db", db, "--tenant", A, "--login", "first"]) == 2  # taken
    out = capsys.readouterr()
    assert PASSWORD not in out.out + out.err and "another long password" not in out.out + out.err
    store = Store(db)
    assert [(u["login"], u["role"]) for u in accounts.users(store.db, A)] == [("first", "admin"), ("second", "operator")]

    async def check():
        assert await accounts.authenticate(store.db, A, "first", PASSWORD, lambda: START) == accounts.OK
        assert await accounts.authenticate(store.db, A, "second", "another long password", lambda: START) == accounts.OK
    asyncio.run(check())
    assert PASSWORD not in open(db, "rb").read().decode("latin-1")  # only its argon2id hash is kept
    store.close()


def test_anpi_admin_unlock_lets_a_locked_out_account_in_again_from_every_address(tmp_path, backend, capsys):
    """When every administrator is locked out, the command line unlocks one (audited)."""
    world = build_world(str(tmp_path / "anpi.db"), days=1)
    wall = lambda: world.wall[0]  # noqa: E731

    async def go():
        async with side_of(backend, world, {A: "Asia/Tokyo"}) as side:
            await side.add_staff(A, "a-admin", "admin", HASHED, START)
            for source in ("203.0.113.1", "203.0.113.2"):
                for _ in range(accounts.MAX_FAILURES):
                    await side.staff.authenticate(A, "a-admin", "wrong password", wall, source)
                assert await side.staff.authenticate(A, "a-admin", PASSWORD, wall, source) == accounts.LOCKED
            assert (await side.staff.users(A))[0]["locked_until"] > START
            where = ["--redis", redis_url()] if backend == "redis" else ["--db", world.store.path]
            assert await asyncio.to_thread(cli.main, ["admin", "unlock", "--tenant", A, "--login", "a-admin", *where]) == 0
            for source in ("203.0.113.1", "203.0.113.2"):
                assert await side.staff.authenticate(A, "a-admin", PASSWORD, wall, source) == accounts.OK
            assert (await side.staff.users(A))[0]["locked_until"] == 0
            assert [(r["login"], r["action"], r["target"]) for r in await side.audit_log(A)][0] == \
                ("(anpi admin)", "user.unlock", "a-admin")
            assert await asyncio.to_thread(cli.main, ["admin", "unlock", "--tenant", A, "--login", "nobody", *where]) == 2
    asyncio.run(go())
    assert "has no account 'nobody'" in capsys.readouterr().err
    assert cli.main(["admin", "unlock", "--tenant", A, "--login", "a-admin", "--db", str(tmp_path / "none.db")]) == 2
    world.store.close()


def test_the_demo_login_is_an_administrator_with_a_fresh_password_each_run(tmp_path):
    store = Store(str(tmp_path / "anpi.db"))
    first, second = demo_login(store, "demo"), demo_login(store, "demo")
    assert first != second and len(second) >= accounts.MIN_PASSWORD

    async def check():
        assert await accounts.authenticate(store.db, "demo", DEMO_LOGIN, first, lambda: START) == accounts.BAD
        assert await accounts.authenticate(store.db, "demo", DEMO_LOGIN, second, lambda: START) == accounts.OK
    asyncio.run(check())
    assert accounts.users(store.db, "demo")[0]["role"] == accounts.ADMIN
    store.close()
