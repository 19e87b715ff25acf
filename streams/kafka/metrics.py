"""Prometheus metrics of the Kafka runtime (beside Faust's own sensors)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streams import quarantine

REGISTRY = CollectorRegistry()
QUARANTINED = quarantine.counter(REGISTRY)  # kind: undecodable | refused | error | state (a saved state unread)

EVENTS_IN = Counter("anpi_events_in", "Inbound events applied, by type", ["type"], registry=REGISTRY)
EFFECTS_OUT = Counter("anpi_effects_out", "Effects emitted, by kind", ["effect"], registry=REGISTRY)
ESCALATIONS = Counter("anpi_escalations", "Staff calls and contact notifications", ["effect"], registry=REGISTRY)
DUE_INDEX = Gauge("anpi_due_index_size", "Subjects with a timer, in the partitions this worker owns",
                  registry=REGISTRY)
TICK_LAG = Gauge("anpi_tick_lag_seconds", "Wall clock minus the time of the last tick processed, per partition",
                 ["partition"], registry=REGISTRY)
LAST_TICK = Gauge("anpi_last_tick_timestamp_seconds", "Time carried by the last tick processed, per partition",
                  ["partition"], registry=REGISTRY)
LATENCY = Histogram("anpi_processing_seconds", "Time to process one batch of a partition's inbound messages, per partition",
                    ["partition"], registry=REGISTRY,
                    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
