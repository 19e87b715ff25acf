"""Bad settings and arguments at start: one clear line on stderr and exit 2, never a traceback, and
never a server that runs but does nothing. Also a webhook or a scenario nested 10,000 deep."""
import hashlib
import hmac
import base64
import socket
import subprocess
import sys

import pytest

from streams import cli

CHANNEL = {"ANPI_CHANNEL_SECRET": "s" * 32, "ANPI_CHANNEL_ACCESS_TOKEN": "t" * 40}


def refused(argv, capsys) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.fixture
def channel(monkeypatch):
    for name, value in CHANNEL.items():
        monkeypatch.setenv(name, value)


def test_an_unknown_time_zone_is_refused_by_serve_ingress_and_readside(channel, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ANPI_TIMEZONE", "Mars/Olympus")
    line = refused(["serve", "--db", str(tmp_path / "a.db"), "--port", "0"], capsys)
    assert line == "anpi serve: ANPI_TIMEZONE='Mars/Olympus': not a time zone of the tz database (e.g. Asia/Tokyo)"
    assert refused(["ingress", "--port", "0"], capsys).startswith("anpi ingress: ANPI_TIMEZONE='Mars/Olympus'")
    assert refused(["readside"], capsys).startswith("anpi readside: ANPI_TIMEZONE='Mars/Olympus'")
    assert not (tmp_path / "a.db").exists()


def test_a_tenant_id_that_cannot_be_a_url_or_topic_is_refused(channel, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ANPI_TENANT", "town/../admin")
    assert "ANPI_TENANT='town/../admin': a tenant id is" in refused(["serve", "--db", str(tmp_path / "a.db")], capsys)
    monkeypatch.delenv("ANPI_TENANT")
    monkeypatch.setenv("ANPI_TOPIC_PREFIX", "a b")
    assert "ANPI_TOPIC_PREFIX='a b'" in refused(["worker"], capsys)


def test_ports_out_of_range_or_in_use_are_refused(channel, monkeypatch, tmp_path, capsys):
    assert refused(["serve", "--db", str(tmp_path / "a.db"), "--port", "70000"], capsys) == \
        "anpi serve: --port 70000: a port is from 0 to 65535"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert refused(["serve", "--db", str(tmp_path / "a.db"), "--port", str(port)], capsys) == \
            f"anpi serve: --port {port}: another process is listening on 127.0.0.1:{port}"
        assert "another process is listening" in refused(["ingress", "--port", str(port)], capsys)
        monkeypatch.setenv("ANPI_WEB_PORT", str(port))
        assert refused(["worker"], capsys) == \
            f"anpi worker: ANPI_WEB_PORT {port}: another process is listening on 127.0.0.1:{port}"


def test_a_database_path_that_is_a_directory_or_not_sqlite_is_refused(channel, tmp_path, capsys):
    assert refused(["serve", "--db", str(tmp_path)], capsys) == \
        f"anpi serve: --db {tmp_path}: is a directory, not an SQLite file"
    notes = tmp_path / "notes.txt"
    notes.write_text("これはデータベースではありません")
    assert refused(["serve", "--db", str(notes)], capsys) == f"anpi serve: --db {notes}: not an SQLite database"
    assert refused(["quarantine", "list", "--db", str(notes)], capsys) == \
        f"anpi quarantine: --db {notes}: not an SQLite database"


def test_kafka_numbers_that_are_not_numbers_are_refused(monkeypatch, capsys):
    monkeypatch.setenv("ANPI_PARTITIONS", "eight")
    assert refused(["worker"], capsys) == "anpi worker: ANPI_PARTITIONS='eight': expected an integer"
    monkeypatch.setenv("ANPI_PARTITIONS", "0")
    assert refused(["worker"], capsys) == "anpi worker: ANPI_PARTITIONS='0': must be at least 1"


def test_the_worker_module_run_directly_says_the_same_in_one_line():
    done = subprocess.run([sys.executable, "-m", "streams.kafka.worker"], capture_output=True, text=True,
                          env={"ANPI_TICK_SECONDS": "often", "PATH": "/usr/bin:/bin"}, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "anpi worker: ANPI_TICK_SECONDS='often': expected a number"


def test_a_scenario_nested_ten_thousand_deep_exits_2_with_one_line(tmp_path, capsys):
    for name, text in (("deep.json", '{"start": ' + "[" * 10_000 + "]" * 10_000 + "}"),
                       ("deep.yaml", "start: " + "[" * 10_000 + "]" * 10_000 + "\n")):
        path = tmp_path / name
        path.write_text(text)
        assert refused(["simulate", str(path)], capsys) == f"anpi simulate: {path}: nested too deeply to be a scenario"


def test_a_webhook_nested_ten_thousand_deep_gets_400_not_500(tmp_path):
    import asyncio

    import aiohttp

    from schemas.tenant import Tenant
    from streams.embedded.runtime import Runtime
    from streams.embedded.store import Store

    tenant = Tenant("town", "s" * 32, "t" * 40)
    body = ('{"destination": "U1", "events": [{"type": "message", "deep": ' + "[" * 10_000 + "]" * 10_000
            + "}]}").encode()
    signature = base64.b64encode(hmac.new(tenant.channel_secret.encode(), body, hashlib.sha256).digest()).decode()

    async def go():
        runtime = Runtime(Store(str(tmp_path / "a.db")), [tenant], "http://unused", lambda: 0)
        url = await runtime.start()
        try:
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{url}/webhook/town", data=body,
                                     headers={"X-Line-Signature": signature}) as answer:
                    return answer.status, await answer.json()
        finally:
            await runtime.close()

    assert asyncio.run(go()) == (400, {"message": "body: JSON nested too deeply"})


def test_a_scenario_outside_the_years_the_calendar_can_take_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "far.yaml"
    path.write_text('start: "2400-12-01T00:00:00+09:00"\nend: "2400-12-03T00:00:00+09:00"\n')
    assert refused(["simulate", str(path)], capsys) == \
        "anpi simulate: start: must lie between 1970 and 2300 (got '2400-12-01T00:00:00+09:00')"
