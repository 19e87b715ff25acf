"""Where the Kafka runtime finds its services and how it names its topics. Local defaults."""
from __future__ import annotations

import os
import socket
import zlib
from dataclasses import dataclass

from streams import startup


@dataclass(frozen=True)
class Settings:
    kafka: str = "127.0.0.1:9092"
    redis: str = "redis://127.0.0.1:6379/0"
    prefix: str = "anpi"             # topic and consumer-group names start with it: one per tenant / run
    partitions: int = 8
    tick_seconds: float = 5.0        # the ticker's period; 0 turns it off (virtual-time runs tick themselves)
    tick_grace_seconds: float = 5.0  # ticks trail the wall clock by this much, so a tap stamped just
                                     # before a deadline but still in flight is applied before it
    web_port: int = 6066             # /metrics
    web_host: str = "127.0.0.1"      # 0.0.0.0 in a container, so Prometheus can reach it
    # Kafka static membership: a worker restarted under the same name takes its partitions back at
    # once, instead of waiting for the dead process's session to expire. Unique per worker ("" = off).
    instance: str = ""
    # /healthz fails when a partition has had messages waiting this long with no batch saved
    health_stale_seconds: float = 60.0
    # a partition's states copied to the worker's disk this often while they change (0: never), so
    # that taking it again reads only the changelog's tail (streams/kafka/snapshot.py)
    snapshot_seconds: float = 300.0
    retention_days: int = 365        # inbound, effects, outbox and escalations keep this long (then counts only)

    @classmethod
    def from_env(cls, env=os.environ) -> "Settings":
        """From ANPI_* variables; `startup.BadSetting` names the first that is wrong."""
        web_port = startup.number(env, "ANPI_WEB_PORT", cls.web_port, low=0)
        return cls(
            kafka=env.get("ANPI_KAFKA", cls.kafka),
            redis=env.get("ANPI_REDIS", cls.redis),
            prefix=startup.tenant_id(env.get("ANPI_TOPIC_PREFIX", cls.prefix), "ANPI_TOPIC_PREFIX"),
            partitions=startup.number(env, "ANPI_PARTITIONS", cls.partitions, low=1),
            tick_seconds=startup.number(env, "ANPI_TICK_SECONDS", cls.tick_seconds, float, low=0),
            tick_grace_seconds=startup.number(env, "ANPI_TICK_GRACE_SECONDS", cls.tick_grace_seconds, float, low=0),
            web_port=startup.port(web_port, "ANPI_WEB_PORT"),
            web_host=env.get("ANPI_WEB_HOST", cls.web_host),
            instance=_instance(env.get("ANPI_WORKER_INSTANCE", cls.instance)),
            health_stale_seconds=startup.number(env, "ANPI_HEALTH_STALE_SECONDS", cls.health_stale_seconds, float,
                                                low=1),
            snapshot_seconds=startup.number(env, "ANPI_SNAPSHOT_SECONDS", cls.snapshot_seconds, float, low=0),
            retention_days=startup.number(env, "ANPI_RETENTION_DAYS", cls.retention_days, low=1),
        )

    def env(self) -> dict[str, str]:
        """The same settings as environment variables, for a worker process."""
        return {"ANPI_KAFKA": self.kafka, "ANPI_REDIS": self.redis, "ANPI_TOPIC_PREFIX": self.prefix,
                "ANPI_PARTITIONS": str(self.partitions),
                "ANPI_TICK_SECONDS": str(self.tick_seconds),
                "ANPI_TICK_GRACE_SECONDS": str(self.tick_grace_seconds), "ANPI_WEB_PORT": str(self.web_port),
                "ANPI_WEB_HOST": self.web_host, "ANPI_WORKER_INSTANCE": self.instance,
                "ANPI_HEALTH_STALE_SECONDS": str(self.health_stale_seconds),
                "ANPI_SNAPSHOT_SECONDS": str(self.snapshot_seconds), "ANPI_RETENTION_DAYS": str(self.retention_days)}

    # topics: one place for their names
    @property
    def inbound(self) -> str:
        return f"{self.prefix}-inbound"      # events and ticks, keyed by subject

    @property
    def effects(self) -> str:
        return f"{self.prefix}-effects"      # every effect (audit), partition = its subject's partition

    @property
    def outbox(self) -> str:
        return f"{self.prefix}-outbox"       # what the sender turns into LINE messages

    @property
    def escalations(self) -> str:
        return f"{self.prefix}-escalations"  # staff calls, contacts told, and their resolution

    @property
    def audit(self) -> str:
        return f"{self.prefix}-audit"        # the ingress's record of every webhook event taken or refused

    @property
    def quarantine(self) -> str:
        return f"{self.prefix}-quarantine"   # inbound records set aside: the engine could not apply them

    @property
    def changelog(self) -> str:
        return f"{self.prefix}-engine-subjects-changelog"  # compacted: each subject's state, and APPLIED


def _instance(value: str) -> str:
    """"@hostname": the container's name, which a restarted container keeps (docker compose replicas)."""
    return socket.gethostname() if value == "@hostname" else value


def partition_of(subject: str, partitions: int) -> int:
    """Every producer places a subject with this, so ticks and the due-index agree with the table.

    (Not the client's murmur2 partitioner: this must also run over a million keys when a partition is
    assigned and its due-index is rebuilt, and crc32 is C.)
    """
    return zlib.crc32(subject.encode()) % partitions
