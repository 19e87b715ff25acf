"""`anpi services up|down` for real: a Kafka broker and a Redis server, checked over their own protocols.

The tests that start services share one `up` (a broker takes several seconds to start) and leave the
services as they found them: stopped if they were stopped, running if they were running (CI starts
them before the tests). They need Java (and redis-server, or root to install it): without, they skip
with a loud reason on a developer's machine, and fail in CI (CI=true), which must never skip them.
"""
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import pytest

from streams.tools import services

ROOT = Path(__file__).resolve().parent.parent
ANPI = [sys.executable, "-m", "streams.cli"]
CI = os.environ.get("CI") == "true"


def _missing() -> str | None:
    if shutil.which("java") is None:
        return "java (Kafka runs on it)"
    if shutil.which("redis-server") is None and os.geteuid() != 0:
        return "redis-server (or root, to apt-get install it)"
    return None


MISSING = _missing()
if MISSING and not CI:
    warnings.warn(f"tests/test_services.py: SKIPPING the Kafka and Redis tests: no {MISSING} on this machine")
needs_services = pytest.mark.skipif(
    MISSING is not None and not CI,
    reason=f"SKIPPED LOUDLY: `anpi services` needs {MISSING}; CI never skips these",
)


def anpi(*args, env=None, timeout=600):
    return subprocess.run([*ANPI, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})


def connects(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port(pair=False):
    """A port nothing listens on (and the next one too, for a broker and its controller)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65000 and not connects("127.0.0.1", port) and not (pair and connects("127.0.0.1", port + 1)):
            return port
    raise RuntimeError("no free port")


def our_brokers(cfg):
    """Pids of every JVM running kafka.Kafka with this var dir's properties: there must be one at most."""
    marker = str(cfg.kafka_properties).encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kafka.Kafka" in argv and marker in argv:
            found.append(int(entry.name))
    return found


# ------------------------------------------------------------------ a Kafka client, just enough of one

def kafka_request(host, port, api_key, version, body):
    """One request with a v1 header; the response body after its correlation id."""
    client = b"anpi-test"
    msg = struct.pack(">hhih", api_key, version, 7, len(client)) + client + body
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(struct.pack(">i", len(msg)) + msg)
        size = struct.unpack(">i", recv(s, 4))[0]
        data = recv(s, size)
    assert struct.unpack(">i", data[:4])[0] == 7
    return Reader(data[4:])


def recv(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        assert chunk, "connection closed mid-response"
        data += chunk
    return data


class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, fmt):
        value = struct.unpack_from(">" + fmt, self.data, self.at)[0]
        self.at += struct.calcsize(">" + fmt)
        return value

    def string(self):
        n = self.take("h")
        if n < 0:
            return None
        self.at += n
        return self.data[self.at - n:self.at].decode()

    def array(self, item):
        return [item() for _ in range(self.take("i"))]


def metadata(host, port, topic):
    """Metadata v4 for one topic, letting the broker create it: (brokers, cluster id, topic, partitions)."""
    name = topic.encode()
    r = kafka_request(host, port, 3, 4, struct.pack(">ih", 1, len(name)) + name + b"\x01")
    r.take("i")  # throttle time
    brokers = r.array(lambda: (r.take("i"), r.string(), r.take("i"), r.string())[:3])
    cluster_id, _controller = r.string(), r.take("i")

    def partition():
        error, index, leader = r.take("h"), r.take("i"), r.take("i")
        r.array(lambda: r.take("i"))  # replicas
        r.array(lambda: r.take("i"))  # in-sync replicas
        return error, index, leader

    topics = r.array(lambda: (r.take("h"), r.string(), r.take("b"), r.array(partition)))
    return brokers, cluster_id, topics[0]


def delete_topic(host, port, topic):
    name = topic.encode()
    kafka_request(host, port, 20, 1, struct.pack(">ih", 1, len(name)) + name + struct.pack(">i", 10_000))


# ------------------------------------------------------------------ a Redis client, just enough of one

def redis_command(sock_file, *args):
    sock_file.write(f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args))
    sock_file.flush()
    line = sock_file.readline()
    if line.startswith(b"$"):
        n = int(line[1:])
        return None if n < 0 else sock_file.read(n + 2)[:-2].decode()
    return line.rstrip(b"\r\n").decode()


# ------------------------------------------------------------------ settings: no services needed

def test_defaults_are_local_and_controller_takes_the_next_port():
    cfg = services.local({})
    assert (cfg.kafka_host, cfg.kafka_port, cfg.controller_port) == ("127.0.0.1", 9092, 9093)
    assert (cfg.redis_host, cfg.redis_port, cfg.redis_db) == ("127.0.0.1", 6379, 0)
    assert cfg.var == ROOT / "var"


def test_settings_come_from_the_environment(tmp_path):
    cfg = services.local({"ANPI_KAFKA": "localhost:19092,localhost:29092", "ANPI_REDIS": "redis://127.0.0.1:16379/3",
                             "ANPI_VAR": str(tmp_path)})
    assert (cfg.kafka_host, cfg.kafka_port, cfg.controller_port) == ("localhost", 19092, 19093)
    assert (cfg.redis_port, cfg.redis_db) == (16379, 3)
    assert cfg.var == tmp_path and cfg.libs == tmp_path / "kafka" / "libs"
    props = dict(line.split("=", 1) for line in services.kafka_properties(cfg).splitlines())
    assert props["listeners"] == "PLAINTEXT://localhost:19092,CONTROLLER://localhost:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://localhost:19092"
    assert props["controller.quorum.voters"] == "1@localhost:19093"
    assert props["log.dirs"] == str(tmp_path / "kafka" / "data")
    assert props["process.roles"] == "broker,controller"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "default.replication.factor"):
        assert props[key] == "1", key
    assert props["num.partitions"] == "8" and props["auto.create.topics.enable"] == "true"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["log.message.timestamp.type"] == "LogAppendTime"  # retention by the broker's clock


@pytest.mark.parametrize("env, names", [
    ({"ANPI_KAFKA": "kafka:9092"}, "ANPI_KAFKA='kafka:9092' is not on this machine"),
    ({"ANPI_KAFKA": "9092"}, "ANPI_KAFKA='9092': expected host:port"),
    ({"ANPI_REDIS": "http://127.0.0.1:6379/0"}, "ANPI_REDIS='http://127.0.0.1:6379/0': expected redis://"),
    ({"ANPI_REDIS": "redis://10.0.0.5:6379/0"}, "is not on this machine"),
])
def test_bad_settings_name_the_variable(env, names):
    with pytest.raises(services.ServiceError, match=re.escape(names)):
        services.local(env)


def test_up_without_java_fails_with_one_clear_line(tmp_path):
    done = anpi("services", "up", env={"PATH": "", "ANPI_VAR": str(tmp_path),
                                        "ANPI_KAFKA": f"127.0.0.1:{free_port(pair=True)}",
                                        "ANPI_REDIS": f"redis://127.0.0.1:{free_port()}/0"})
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "anpi services up: java not found on PATH: Kafka needs Java 17 (apt-get install -y openjdk-17-jre-headless)"]


# ------------------------------------------------------------------ the real services

@needs_services
@pytest.mark.parametrize("which", ["kafka", "redis"])
def test_up_refuses_a_port_taken_by_another_process(tmp_path, which):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        kafka = taken if which == "kafka" else free_port(pair=True)
        redis = taken if which == "redis" else free_port()
        done = anpi("services", "up", env={"ANPI_VAR": str(tmp_path), "ANPI_KAFKA": f"127.0.0.1:{kafka}",
                                            "ANPI_REDIS": f"redis://127.0.0.1:{redis}/0"})
    assert done.returncode == 1
    assert done.stderr.splitlines()[0].startswith(f"anpi services up: port {taken} on 127.0.0.1 (ANPI_")
    assert "taken by a process anpi did not start" in done.stderr
    assert not (tmp_path / "kafka" / "kafka.pid").exists() and not (tmp_path / "redis" / "redis.pid").exists()


@pytest.fixture(scope="module")
def running():
    """`anpi services up` once for the module; afterwards, down again unless they were up before."""
    if MISSING:
        pytest.fail(f"CI=true but this machine has no {MISSING}: .ci/run must install it")
    cfg = services.local()
    before = services.status(cfg)
    done = anpi("services", "up")
    assert done.returncode == 0, done.stdout + done.stderr
    yield cfg
    if not any(before.values()):
        assert anpi("services", "down").returncode == 0
    elif not all(services.status(cfg).values()):
        assert anpi("services", "up").returncode == 0


@needs_services
def test_kafka_answers_and_creates_topics(running):
    cfg = running
    assert connects(cfg.kafka_host, cfg.kafka_port)
    # the broker's log rolls by size (server.log.1, .2, …): the start may be in an older file by now
    logs = sorted(cfg.kafka_logs.glob("server.log*"))
    assert any(services.KAFKA_STARTED in log.read_text(errors="replace") for log in logs)
    assert services.kafka_answers(cfg.kafka_host, cfg.kafka_port)

    # A topic nobody made: the broker creates it through its KRaft controller, with 8 partitions
    # led by node 1, and tells clients to reach it at the advertised address.
    topic = f"anpi-services-test-{uuid.uuid4().hex[:8]}"
    try:
        deadline = time.monotonic() + 30
        while True:
            brokers, cluster_id, (error, name, _internal, partitions) = metadata(cfg.kafka_host, cfg.kafka_port, topic)
            if error == 0 and len(partitions) == 8 and all(p[0] == 0 and p[2] == 1 for p in partitions):
                break
            assert time.monotonic() < deadline, f"topic not ready: error {error}, partitions {partitions}"
            time.sleep(0.2)
        assert name == topic
        assert brokers == [(1, cfg.kafka_host, cfg.kafka_port)]
        assert cluster_id == (cfg.kafka_dir / "cluster-id").read_text().strip()
    finally:
        delete_topic(cfg.kafka_host, cfg.kafka_port, topic)


@needs_services
def test_redis_answers_ping_and_keeps_a_value(running):
    cfg = running
    assert services.redis_answers(cfg.redis_host, cfg.redis_port)
    key = f"anpi-services-test-{uuid.uuid4().hex[:8]}"
    with socket.create_connection((cfg.redis_host, cfg.redis_port), timeout=5) as s, s.makefile("rwb") as f:
        assert redis_command(f, "PING") == "+PONG"
        assert redis_command(f, "SELECT", str(cfg.redis_db)) == "+OK"
        assert redis_command(f, "SET", key, "お元気ですか") == "+OK"
        assert redis_command(f, "GET", key) == "お元気ですか"
        assert redis_command(f, "DEL", key) == ":1"


@needs_services
def test_up_again_is_idempotent(running):
    cfg = running
    before = services.status(cfg)
    assert all(before.values())
    done = anpi("services", "up")
    assert done.returncode == 0, done.stderr
    assert f"kafka already running (pid {before['kafka']})" in done.stdout
    assert f"redis already running (pid {before['redis']})" in done.stdout
    assert services.status(cfg) == before
    assert our_brokers(cfg) == [before["kafka"]]


@needs_services
def test_down_stops_both_and_up_restarts_from_the_cached_jars(running):
    cfg = running
    old = services.status(cfg)
    done = anpi("services", "down")
    assert done.returncode == 0, done.stderr
    assert "kafka stopped" in done.stdout and "redis stopped" in done.stdout
    for port in (cfg.kafka_port, cfg.controller_port, cfg.redis_port):
        assert not connects("127.0.0.1", port), f"port {port} still listening after down"
    assert services.status(cfg) == {"kafka": None, "redis": None}
    assert our_brokers(cfg) == []
    assert not cfg.kafka_pid.exists() and not cfg.redis_pid.exists()

    again = anpi("services", "down")
    assert again.returncode == 0, again.stderr
    assert "kafka not running" in again.stdout and "redis not running" in again.stdout

    # Back up, as the other tests (in any order) expect: no Maven this time, a new broker.
    up = anpi("services", "up")
    assert up.returncode == 0, up.stderr
    assert "Maven" not in up.stdout
    new = services.status(cfg)
    assert all(new.values()) and new["kafka"] != old["kafka"]
    assert services.kafka_answers(cfg.kafka_host, cfg.kafka_port)
    assert services.redis_answers(cfg.redis_host, cfg.redis_port)
