"""`anpi ingress --db FILE --processes N`: webhook servers of their own beside `anpi serve`'s engine,
writing into the same SQLite file's inbox; what they commit is applied like any other webhook."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

from schemas import effects as fx
from schemas.events import Register
from schemas.settings import NOTIFY, MemberSettings, Schedule
from streams.embedded.engine import Engine
from streams.embedded.store import Store
from test_ingress import SECRET, _free_port, body_of, get, ok_tap, post, sign, user

TENANT = "town"
START = 1_796_050_800_000        # 2026-12-01T00:00+09:00
NINE = START + 9 * 3_600_000
TAPS = 60


def _two_free_ports() -> int:
    while True:
        port = _free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue


def test_two_ingress_processes_write_one_sqlite_inbox_and_the_engine_applies_every_tap_once(tmp_path):
    db = str(tmp_path / "anpi.db")
    members = [f"U{i:032x}" for i in range(TAPS)]
    store = Store(db)
    for member in members:
        store.accept(TENANT, None, [(member, Register(START, MemberSettings(member, NOTIFY, Schedule("1d", 9 * 60,
                                                                                                     "Asia/Tokyo"))))])
    engine = Engine(store, TENANT)
    assert sum(e.effect == fx.CHECK_SENT for e in engine.step(NINE)) == TAPS
    port, metrics = _free_port(), _two_free_ports()
    env = {**os.environ, "ANPI_TENANT": TENANT, "ANPI_CHANNEL_SECRET": SECRET, "ANPI_CHANNEL_ACCESS_TOKEN": "t" * 40,
           "ANPI_INGRESS_METRICS_PORT": str(metrics)}
    process = subprocess.Popen([sys.executable, "-m", "streams.cli", "ingress", "--db", db, "--port", str(port),
                                "--processes", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    host = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if get(host, "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "anpi ingress --db did not start"
            time.sleep(0.2)
        path = f"/webhook/{TENANT}"
        for i, member in enumerate(members):   # each on a connection of its own: the kernel spreads them
            body = body_of(ok_tap(user(member), at=NINE + 60_000 + i))
            assert post(host, path, body, sign(body))[0] == 200
            if i == 0:   # LINE's redelivery of the same webhook event, taken by either process: stored once
                assert post(host, path, body, sign(body))[0] == 200
        taken = []
        for one in (metrics, metrics + 1):
            page = urllib.request.urlopen(f"http://127.0.0.1:{one}/metrics", timeout=5).read().decode()
            taken += [float(line.rsplit(" ", 1)[1]) for line in page.splitlines()
                      if line.startswith("anpi_ingress_webhooks_total{") and 'outcome="accepted"' in line]
        assert len(taken) == 2 and min(taken) > 0 and sum(taken) == TAPS + 1, taken   # both took some
    finally:
        process.terminate()
        process.wait(30)
    err = process.stderr.read().decode()
    assert process.returncode == 0, err[err.find("Traceback"):]
    confirmed = [e.subject for e in engine.step(NINE + 10 * 60_000) if e.effect == fx.CONFIRMED]
    assert sorted(confirmed) == members   # every tap applied, once
    store.close()


def test_anpi_ingress_db_says_what_is_missing(tmp_path):
    missing = subprocess.run([sys.executable, "-m", "streams.cli", "ingress", "--db", str(tmp_path / "none.db")],
                             capture_output=True, text=True, env={**os.environ, "ANPI_CHANNEL_SECRET": ""})
    assert missing.returncode == 2 and "start `anpi serve --db" in missing.stderr
    Store(str(tmp_path / "empty.db")).close()
    empty = subprocess.run([sys.executable, "-m", "streams.cli", "ingress", "--db", str(tmp_path / "empty.db")],
                           capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if not k.startswith("ANPI_CHANNEL")})
    assert empty.returncode == 2 and "no tenant with a LINE channel" in empty.stderr
