"""`anpi services up|down`: a real Kafka broker (KRaft, single node) and a Redis server on this machine.

There is no Docker engine on the developers' machines or in CI, and nothing to download from but the
package registries. So Kafka is the `kafka_2.13` jar and its dependencies from Maven Central
(`deploy/kafka/pom.xml`, fetched once into `$ANPI_VAR/kafka/libs`), run with plain `java -cp`, and
Redis is Debian's `redis-server`. Both run detached, in their own sessions, so they outlive the
command that started them; a pid file in `$ANPI_VAR` says which process is ours.

Where they are (`local()`: a `Local`), each with a local default:
  ANPI_KAFKA  host:port of the broker      127.0.0.1:9092 (the KRaft controller takes port + 1)
  ANPI_REDIS  redis://host:port/db         redis://127.0.0.1:6379/0
  ANPI_VAR    state and cache              var/ in the checkout (git-ignored)
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kafka"

KAFKA_STARTED = "Transition from STARTING to STARTED"
LOCAL_HOSTS = {"localhost", "::1"}  # and all of 127.0.0.0/8
STOP_GRACE = {"kafka": 30.0, "redis": 10.0}  # seconds between SIGTERM and SIGKILL


class ServiceError(Exception):
    """Something that stops `up` or `down`; its text is the one line the user sees."""

    def __init__(self, message: str, log: Path | None = None, since: int = 0):
        super().__init__(message)
        self.log, self.since = log, since  # the log whose tail explains it, read from byte `since`


# --------------------------------------------------------------------------------------- where they are

@dataclass(frozen=True)
class Local:
    var: Path
    kafka_host: str
    kafka_port: int
    redis_host: str
    redis_port: int
    redis_db: int

    @property
    def controller_port(self) -> int:
        # Derived, not a setting of its own: one number to change when 9092 is taken.
        return self.kafka_port + 1

    @property
    def kafka_dir(self) -> Path:
        return self.var / "kafka"

    @property
    def libs(self) -> Path:
        return self.kafka_dir / "libs"

    @property
    def kafka_logs(self) -> Path:
        return self.kafka_dir / "logs"

    @property
    def kafka_log(self) -> Path:
        return self.kafka_logs / "server.log"

    @property
    def kafka_out(self) -> Path:
        return self.kafka_logs / "kafka.out"

    @property
    def kafka_data(self) -> Path:
        return self.kafka_dir / "data"

    @property
    def kafka_properties(self) -> Path:
        return self.kafka_dir / "server.properties"

    @property
    def kafka_pid(self) -> Path:
        return self.kafka_dir / "kafka.pid"

    @property
    def redis_dir(self) -> Path:
        return self.var / "redis"

    @property
    def redis_log(self) -> Path:
        return self.redis_dir / "redis.log"

    @property
    def redis_pid(self) -> Path:
        return self.redis_dir / "redis.pid"


def local(env: dict[str, str] | None = None) -> Local:
    """Read ANPI_KAFKA, ANPI_REDIS and ANPI_VAR; raise ServiceError naming the bad one."""
    env = os.environ if env is None else env
    kafka = env.get("ANPI_KAFKA") or "127.0.0.1:9092"
    redis = env.get("ANPI_REDIS") or "redis://127.0.0.1:6379/0"
    var = env.get("ANPI_VAR")

    # A client may be given a list of bootstrap servers; the broker we start is the first one.
    first = kafka.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ServiceError(f"ANPI_KAFKA={kafka!r}: expected host:port, e.g. 127.0.0.1:9092")
    kafka_host, kafka_port = host.strip("[]"), int(port)
    if not 0 < kafka_port < 65535:  # the controller needs port + 1 too
        raise ServiceError(f"ANPI_KAFKA={kafka!r}: port must be 1..65534 (the controller takes port + 1)")

    url = urlsplit(redis)
    try:
        redis_port = url.port or 6379
    except ValueError:
        raise ServiceError(f"ANPI_REDIS={redis!r}: bad port") from None
    db = url.path.lstrip("/") or "0"
    if url.scheme != "redis" or not url.hostname or not db.isdigit():
        raise ServiceError(f"ANPI_REDIS={redis!r}: expected redis://host:port/db, e.g. redis://127.0.0.1:6379/0")

    for name, value, h in (("ANPI_KAFKA", kafka, kafka_host), ("ANPI_REDIS", redis, url.hostname)):
        # `services up` starts processes here; it cannot start them on another host.
        if not _is_local(h):
            raise ServiceError(f"{name}={value!r} is not on this machine; `anpi services` only starts local services")

    return Local(
        var=Path(var).expanduser().resolve() if var else ROOT / "var",
        kafka_host=kafka_host, kafka_port=kafka_port,
        redis_host=url.hostname, redis_port=redis_port, redis_db=int(db),
    )


def _is_local(host: str) -> bool:
    return host in LOCAL_HOSTS or host.startswith("127.")


# --------------------------------------------------------------------------------------- commands

def up(cfg: Local | None = None, timeout: float = 120.0, out=None) -> int:
    """Start Kafka and Redis unless they already run; wait until both answer. Exit code."""
    out = out or sys.stdout
    try:
        cfg = cfg or local()
        with _lock(cfg):
            return _up(cfg, timeout, out)
    except ServiceError as e:
        _report(e, "up")
        return 1
    except KeyboardInterrupt:
        # _up has already stopped whatever it started: say so rather than print a traceback.
        print("anpi services up: interrupted; nothing was left half-started", file=sys.stderr)
        return 130


def down(cfg: Local | None = None, out=None) -> int:
    """Stop our Kafka and Redis (SIGTERM, then SIGKILL after a grace period). Exit code."""
    out = out or sys.stdout
    try:
        cfg = cfg or local()
        with _lock(cfg):
            for name in ("kafka", "redis"):
                _stop(cfg, name, out)
        return 0
    except ServiceError as e:
        _report(e, "down")
        return 1


def status(cfg: Local | None = None) -> dict[str, int | None]:
    """The pid of each of our services that is running, else None."""
    cfg = cfg or local()
    return {name: _running(cfg, name) for name in ("kafka", "redis")}


def _up(cfg: Local, timeout: float, out) -> int:
    deadline = time.monotonic() + timeout
    kafka, redis = _running(cfg, "kafka"), _running(cfg, "redis")
    started: list[tuple[str, subprocess.Popen]] = []
    try:
        # Check everything that can fail fast before the slow parts (download, JVM start).
        if kafka is None:
            _require_java()
            _require_free(cfg.kafka_host, cfg.kafka_port, "ANPI_KAFKA")
            _require_free(cfg.kafka_host, cfg.controller_port, "ANPI_KAFKA port + 1, the KRaft controller")
        if redis is None:
            _require_free(cfg.redis_host, cfg.redis_port, "ANPI_REDIS")
            redis_server = _require_redis(cfg, out)
        if kafka is None:
            _fetch_jars(cfg, out)
            _format_storage(cfg)
            kafka_since = _size(cfg.kafka_log)
            started.append(("kafka", _start_kafka(cfg)))
        if redis is None:
            started.append(("redis", _start_redis(cfg, redis_server)))

        procs = dict(started)
        _wait(lambda: redis_answers(cfg.redis_host, cfg.redis_port), procs.get("redis", redis), deadline,
              "redis", cfg.redis_log)
        if kafka is None:
            _wait(lambda: kafka_answers(cfg.kafka_host, cfg.kafka_port)
                  and KAFKA_STARTED in _read(cfg.kafka_log, kafka_since), procs["kafka"], deadline,
                  "kafka", cfg.kafka_log, kafka_since)
        else:
            # Ours and running, perhaps still starting (a concurrent `up`): answering is enough.
            _wait(lambda: kafka_answers(cfg.kafka_host, cfg.kafka_port), kafka, deadline, "kafka", cfg.kafka_log)
    except BaseException:
        # Leave nothing half-started behind: a broker that timed out may still be starting.
        for name, proc in started:
            _terminate(proc.pid, STOP_GRACE[name])
            _pid_file(cfg, name).unlink(missing_ok=True)
        raise

    for name, pid in (("kafka", kafka), ("redis", redis)):
        where = _where(cfg, name)
        if pid is None:
            print(f"anpi services: {name} started (pid {_running(cfg, name)}) on {where}", file=out)
        else:
            print(f"anpi services: {name} already running (pid {pid}) on {where}", file=out)
    print(f"anpi services: logs: {_show(cfg.kafka_log)}, {_show(cfg.redis_log)}", file=out)
    return 0


def _where(cfg: Local, name: str) -> str:
    if name == "kafka":
        return f"{cfg.kafka_host}:{cfg.kafka_port} (controller :{cfg.controller_port})"
    return f"redis://{cfg.redis_host}:{cfg.redis_port}/{cfg.redis_db}"


def _report(e: ServiceError, command: str) -> None:
    print(f"anpi services {command}: {e}", file=sys.stderr)
    if e.log is not None:
        tail = _read(e.log, e.since).splitlines()[-30:]
        if tail:
            print(f"--- last lines of {_show(e.log)}:", file=sys.stderr)
            print("\n".join(tail), file=sys.stderr)


# --------------------------------------------------------------------------------------- prerequisites

def _require_java() -> None:
    if shutil.which("java") is None:
        raise ServiceError("java not found on PATH: Kafka needs Java 17 (apt-get install -y openjdk-17-jre-headless)")


def _require_free(host: str, port: int, what: str) -> None:
    # Called only when our own service is not running, so anything answering is someone else's.
    if _connects(host, port):
        raise ServiceError(f"port {port} on {host} ({what}) is taken by a process anpi did not start; "
                           f"stop it or choose another port")


def _require_redis(cfg: Local, out) -> str:
    """Path of redis-server; installs Debian's package when we may (root with apt-get), since CI must."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServiceError("redis-server not found on PATH: install it (sudo apt-get install -y redis-server)")
    cfg.redis_dir.mkdir(parents=True, exist_ok=True)
    log = cfg.redis_dir / "apt.log"
    print("anpi services: redis-server not found; installing Debian's package "
          "(apt-get update && apt-get install -y redis-server) ...", file=out, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open(log, "w") as f:
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "redis-server"]):
            if subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=env).returncode:
                raise ServiceError(f"{' '.join(cmd)} failed", log)
    found = shutil.which("redis-server")
    if not found:
        raise ServiceError("redis-server installed but still not on PATH", log)
    return found


# --------------------------------------------------------------------------------------- kafka

def _fetch_jars(cfg: Local, out) -> None:
    """The broker's jars in cfg.libs, from Maven once; later calls find them and need no network.

    A marker file holds the hash of the pom it came from, so a changed pom (a new Kafka version)
    fetches again, and a copy cut short (no marker) never counts as done.
    """
    pom = DEPLOY / "pom.xml"
    if not pom.is_file():
        raise ServiceError(f"{pom} not found: `anpi services` runs from a checkout of the anpi repo")
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    marker = cfg.libs / ".fetched"
    if marker.is_file() and marker.read_text().strip() == digest:
        return
    if shutil.which("mvn") is None:
        raise ServiceError("mvn not found on PATH: it fetches Kafka's jars once (apt-get install -y maven)")

    print(f"anpi services: fetching Kafka's jars with Maven (once; cached in {_show(cfg.libs)}) ...",
          file=out, flush=True)
    cfg.kafka_dir.mkdir(parents=True, exist_ok=True)
    fresh = cfg.kafka_dir / "libs.partial"
    shutil.rmtree(fresh, ignore_errors=True)
    log = cfg.kafka_dir / "maven.log"
    with open(log, "w") as f:
        done = subprocess.run(
            ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={fresh}"],
            stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
        )
    if done.returncode or not any(fresh.glob("kafka_2.13-*.jar")):
        raise ServiceError(f"Maven could not fetch Kafka's jars (see {_show(log)})", log)
    (fresh / ".fetched").write_text(digest + "\n")
    shutil.rmtree(cfg.libs, ignore_errors=True)
    fresh.rename(cfg.libs)


def kafka_properties(cfg: Local) -> str:
    """server.properties for a single-node KRaft broker+controller that keeps its data in var."""
    h = cfg.kafka_host
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{h}:{cfg.controller_port}",
        "listeners": f"PLAINTEXT://{h}:{cfg.kafka_port},CONTROLLER://{h}:{cfg.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{h}:{cfg.kafka_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(cfg.kafka_data),
        # One broker: every replication factor must be 1, or internal topics never get created.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        # Tests and dev loops start consumers constantly; the default 3 s wait per group is pure delay.
        "group.initial.rebalance.delay.ms": "0",
        # The cleaner's default 128 MiB buffer is a waste on a dev machine (the JVM has 512 MiB).
        # Kafka requires strictly more than 1 MiB per cleaner thread: 1048576 itself is refused.
        "log.cleaner.dedupe.buffer.size": "2097152",
        "num.partitions": "8",
        "auto.create.topics.enable": "true",
        # Records are stamped by the broker's clock, not the producer's: retention and segment rolls
        # then never depend on a client's clock (a test that moved its clock back 400 days would
        # otherwise write records "older" than the 7-day retention, which the broker deletes).
        "log.message.timestamp.type": "LogAppendTime",
    }
    # Java properties treat backslash as an escape; a path is the only value that could hold one.
    return "".join(f"{k}={v.replace(chr(92), chr(92) * 2)}\n" for k, v in props.items())


def _java(cfg: Local, *args: str, heap: str | None = None) -> list[str]:
    cmd = ["java"]
    if heap:
        cmd.append(f"-Xmx{heap}")
    return cmd + [
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{DEPLOY / 'log4j.properties'}",
        f"-Dkafka.logs.dir={cfg.kafka_logs}",
        "-cp", f"{cfg.libs}/*",
        *args,
    ]


def _cluster_id(cfg: Local) -> str:
    """The KRaft cluster id, made once and kept in var (Kafka's own format: 22 base64url chars)."""
    path = cfg.kafka_dir / "cluster-id"
    if path.is_file():
        return path.read_text().strip()
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):  # would read as an option on the StorageTool command line
            break
    path.write_text(cid + "\n")
    return cid


def _format_storage(cfg: Local) -> None:
    """Write the properties; format the data dir the first time (KRaft refuses an unformatted one)."""
    cfg.kafka_logs.mkdir(parents=True, exist_ok=True)
    cfg.kafka_properties.write_text(kafka_properties(cfg))
    if (cfg.kafka_data / "meta.properties").is_file():
        return
    log = cfg.kafka_logs / "format.out"
    with open(log, "w") as f:
        done = subprocess.run(
            _java(cfg, "kafka.tools.StorageTool", "format", "-t", _cluster_id(cfg), "-c", str(cfg.kafka_properties)),
            stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, timeout=120,
        )
    if done.returncode:
        raise ServiceError(f"formatting Kafka's data dir {_show(cfg.kafka_data)} failed", log)


def _start_kafka(cfg: Local) -> subprocess.Popen:
    # The properties path names this var dir: that is how _is_ours tells our broker from others.
    return _spawn(cfg, "kafka", _java(cfg, "kafka.Kafka", str(cfg.kafka_properties), heap="512m"), cfg.kafka_out)


def kafka_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when a Kafka broker answers an ApiVersions request (v0) with no error.

    More than a TCP connect: the port could be held by something that is not Kafka, or by a broker
    whose request handlers are not up yet.
    """
    client = b"anpi-services"
    body = struct.pack(">hhih", 18, 0, 1, len(client)) + client  # ApiVersions v0, correlation id 1
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            size = struct.unpack(">i", _recv_exactly(s, 4))[0]
            correlation, error = struct.unpack(">ih", _recv_exactly(s, size)[:6])
            return correlation == 1 and error == 0
    except (OSError, struct.error, ValueError):
        return False


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ValueError("connection closed")
        data += chunk
    return data


# --------------------------------------------------------------------------------------- redis

def _start_redis(cfg: Local, redis_server: str) -> subprocess.Popen:
    cfg.redis_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        redis_server,
        "--port", str(cfg.redis_port), "--bind", cfg.redis_host,
        # A cache and a lock table for the runtime, not a store: nothing to persist.
        "--save", "", "--appendonly", "no",
        "--daemonize", "no",  # we detach it ourselves, and so know its pid
        # Its working dir is how _is_ours knows it (redis rewrites its command line).
        "--dir", str(cfg.redis_dir),
        "--logfile", str(cfg.redis_log),
    ]
    return _spawn(cfg, "redis", cmd, cfg.redis_dir / "redis.out")


def redis_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when a Redis server answers PING with PONG (RESP over a raw socket)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return _recv_exactly(s, 7) == b"+PONG\r\n"
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------------------- processes

def _pid_file(cfg: Local, name: str) -> Path:
    return cfg.kafka_pid if name == "kafka" else cfg.redis_pid


def real_clock_env(env=os.environ) -> dict[str, str]:
    """`env` without libfaketime: the servers keep the machine's clock even when the caller runs with
    its clock moved (the tests do, to prove they pass on any date), and libfaketime breaks them (its
    clock_gettime recursion kills redis-server's allocator at start)."""
    out = {k: v for k, v in env.items() if not k.startswith("FAKETIME")}
    preload = [lib for lib in out.get("LD_PRELOAD", "").split() if "faketime" not in lib]
    if preload:
        out["LD_PRELOAD"] = " ".join(preload)
    else:
        out.pop("LD_PRELOAD", None)
    return out


def _spawn(cfg: Local, name: str, cmd: list[str], out: Path) -> subprocess.Popen:
    """Start cmd detached: its own session (no terminal's Ctrl-C or hangup reaches it), output to a file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                cwd=out.parent, start_new_session=True, env=real_clock_env())
    _pid_file(cfg, name).write_text(f"{proc.pid}\n")
    return proc


def _running(cfg: Local, name: str) -> int | None:
    """Pid of our service if it runs. The pid file is a hint; the process itself must prove it is ours."""
    path = _pid_file(cfg, name)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid is not None and _is_ours(cfg, name, pid):
        return pid
    path.unlink(missing_ok=True)  # stale: the process is gone, or the pid now belongs to another
    # A lost pid file must not leave a broker no `down` can find.
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _is_ours(cfg, name, int(entry.name)):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{entry.name}\n")
            return int(entry.name)
    return None


def _is_ours(cfg: Local, name: str, pid: int) -> bool:
    if not _alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if name == "kafka":
            return b"kafka.Kafka" in argv and str(cfg.kafka_properties).encode() in argv
        return b"redis-server" in argv[0] and Path(f"/proc/{pid}/cwd").resolve() == cfg.redis_dir.resolve()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    """Running, and not a zombie: a detached child is reaped by whoever is pid 1, perhaps never."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _stop(cfg: Local, name: str, out) -> None:
    pid = _running(cfg, name)
    if pid is None:
        print(f"anpi services: {name} not running", file=out)
        return
    took = _terminate(pid, STOP_GRACE[name])
    _pid_file(cfg, name).unlink(missing_ok=True)
    print(f"anpi services: {name} stopped (pid {pid}, {took})", file=out)


def _terminate(pid: int, grace: float) -> str:
    """SIGTERM (Kafka and Redis both shut down cleanly on it), SIGKILL if still alive after grace."""
    start = time.monotonic()
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        until = time.monotonic() + wait
        while _alive(pid) and time.monotonic() < until:
            _reap(pid)
            time.sleep(0.1)
        _reap(pid)
        if not _alive(pid):
            return f"{'SIGTERM' if sig == signal.SIGTERM else 'SIGKILL'}, {time.monotonic() - start:.1f} s"
    return f"{time.monotonic() - start:.1f} s"


def _reap(pid: int) -> None:
    # Our own child (started by this very command) stays a zombie until we wait for it.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _wait(ready, proc: subprocess.Popen | int, deadline: float, name: str, log: Path, since: int = 0) -> None:
    """Poll until ready(); fail fast if the process dies, or at the deadline."""
    pid = proc if isinstance(proc, int) else proc.pid
    while True:
        if ready():
            return
        dead = proc.poll() is not None if isinstance(proc, subprocess.Popen) else not _alive(proc)
        if dead:
            code = f" with code {proc.returncode}" if isinstance(proc, subprocess.Popen) else ""
            raise ServiceError(f"{name} exited{code} while starting (see {_show(log)})", _best_log(log, since), since)
        if time.monotonic() > deadline:
            raise ServiceError(f"{name} (pid {pid}) did not answer in time (see {_show(log)})",
                               _best_log(log, since), since)
        time.sleep(0.25)


def _best_log(log: Path, since: int) -> Path:
    # A JVM that dies before log4j starts (bad classpath, no memory) says why on stdout only.
    if _read(log, since).strip():
        return log
    out = log.with_name("kafka.out") if log.name == "server.log" else log.with_name("redis.out")
    return out if out.is_file() else log


# --------------------------------------------------------------------------------------- small helpers

@contextmanager
def _lock(cfg: Local):
    """One `up` or `down` at a time per var dir: two concurrent `up`s must not start two brokers."""
    cfg.var.mkdir(parents=True, exist_ok=True)
    with open(cfg.var / "services.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _connects(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read(path: Path, since: int = 0) -> str:
    """Text of path from byte since (from the start if the file was rolled over since then)."""
    try:
        with open(path, "rb") as f:
            if since <= _size(path):
                f.seek(since)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _show(path: Path) -> str:
    """A path as short as it can be said: relative to the current dir when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
