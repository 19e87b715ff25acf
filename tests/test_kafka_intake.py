"""The worker's intake (streams/kafka/intake.py) on a stand-in for Faust's consumer: which records
become the agent's batches and which go to Faust. The real broker's side (commits, rebalances,
crashes) is tests/test_kafka_runtime.py's and tests/test_faults_worker.py's."""
import asyncio
from collections import namedtuple

from streams.kafka.intake import drain

TP = namedtuple("TP", "topic partition")
Record = namedtuple("Record", "offset key value")


class Stopped:
    def __init__(self):
        self.flag = False

    def is_set(self):
        return self.flag


class Consumer:
    """What `drain` uses of Faust's consumer: fetches handed out in turn, then stop."""
    consumer_stopped_errors = (RuntimeError,)

    def __init__(self, fetches, active):
        self.fetches, self.active = list(fetches), active
        self._stopped, self.should_stop, self.flow_active = Stopped(), False, True
        self.to_faust, self.seeks = [], 0

    async def _wait_next_records(self, timeout):
        if not self.fetches:
            self._stopped.flag = True
            return None, None
        return self.fetches.pop(0), self.active

    async def perform_seek(self):
        self.seeks += 1

    def _to_message(self, tp, record):
        return (tp, record.offset)

    async def callback(self, message):
        self.to_faust.append(message)


def test_each_inbound_partition_of_a_fetch_is_one_batch_and_other_topics_go_to_faust():
    inbound = [TP("in", n) for n in range(3)]
    fetch = {inbound[0]: [Record(5, b"a", b"1"), Record(6, b"b", b"2")],
             inbound[1]: [Record(9, b"c", b"3")],
             inbound[2]: [Record(1, b"d", b"4")],          # not an active partition (being revoked)
             TP("leader", 0): [Record(0, None, b"x")]}
    consumer = Consumer([fetch, {inbound[1]: [Record(10, b"e", b"5")]}], {*inbound[:2], TP("leader", 0)})
    batches = []

    async def process(number, records):
        batches.append((number, [r.offset for r in records]))

    asyncio.run(drain(consumer, type("Fetcher", (), {"_stopped": Stopped()})(), topic="in", process=process))
    assert sorted(batches) == [(0, [5, 6]), (1, [9]), (1, [10])]
    assert consumer.to_faust == [(TP("leader", 0), 0)]  # never taken for inbound partition 0


def test_a_fetch_while_the_flow_is_stopped_seeks_back_and_steps_nothing():
    consumer = Consumer([{TP("in", 0): [Record(1, b"a", b"1")]}], None)
    consumer.flow_active = False
    batches = []

    async def process(number, records):
        batches.append(number)

    asyncio.run(drain(consumer, type("Fetcher", (), {"_stopped": Stopped()})(), topic="in", process=process))
    assert batches == [] and consumer.seeks == 1
