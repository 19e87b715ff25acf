"""`anpi sender`: the LINE sender as a Faust agent of its own on the outbox topic (Kafka runtime).

The subject agent writes each batch's LINE-bound effects to the outbox, then a `batch_end` mark, in
one transaction. This agent gathers a partition's effects up to the mark, delivers them as one
batch (streams/sender.py: coalesced multicasts, rate limits, retries with the same key), and only
then acks them, mark included. After a crash the batch comes again whole, coalesces into the same
requests with the same retry keys, and LINE answers 409 to those it had accepted: nothing is sent
twice.
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict

import faust

from schemas.tenant import Tenant
from streams import codec
from streams.tenant_env import tenant_from_env
from streams.kafka.settings import Settings
from streams.sender import Sender

log = logging.getLogger("anpi.sender")


def create_app(settings: Settings, tenant: Tenant, line_api: str) -> faust.App:
    app = faust.App(
        f"{settings.prefix}-sender",
        broker=f"kafka://{settings.kafka}",
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        # for read_committed: the subject agent writes in transactions, and a batch it aborted must
        # not reach LINE (its replay may cut the batch otherwise); the sender itself writes nothing
        processing_guarantee="exactly_once",
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        web_enabled=False,
        datadir=os.path.join(os.environ.get("ANPI_VAR", "var"), "faust", f"{settings.prefix}-sender"),
    )
    outbox = app.topic(settings.outbox, key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw", partitions=settings.partitions)
    sender = Sender(tenant, line_api)
    pending: dict[int, list] = defaultdict(list)  # per partition: (event, record) of the batch not yet delivered

    @app.agent(outbox, concurrency=1)
    async def deliver(stream):
        async for events in stream.noack_take(1000, within=0.05):
            for event in events:
                number, record = event.message.partition, codec.loads(event.value)
                pending[number].append((event, record))
                if "batch_end" in record:
                    batch, pending[number] = pending[number], []
                    report = await sender.deliver([r for _, r in batch[:-1]])
                    for failure in report.failed:
                        log.warning("%s gave up: %s %s", failure.endpoint, failure.status, failure.reason)
                    for e, _ in batch:
                        await stream.ack(e)

    app.anpi_sender = sender
    return app


def main(loglevel: str = "warning") -> int:
    settings = Settings.from_env()
    tenant = tenant_from_env("sender", settings.prefix)
    if tenant is None:
        return 2
    app = create_app(settings, tenant, os.environ.get("ANPI_LINE_API", "https://api.line.me"))
    faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main(*(sys.argv[1:2])))
