"""`anpi worker` (streams/kafka/worker.py) with one fault injected, for the tests that need a worker
to fail in a way a SIGKILL does not show:

  ANPI_TEST_FAIL_AT_SEND=N     the produce batch holding the N-th record the subject agent sends
                               inside a transaction raises (a broker error mid-batch): half a batch
                               is in the transaction
  ANPI_TEST_HANG_AFTER=N       after N batches, every further batch waits forever for its
                               transaction (a stuck worker that still answers HTTP)
  ANPI_TEST_BREAK_ASSIGNMENT=1 the assignor's on_assignment raises, as Faust's own assertion did on a
                               static member restarted with a new address: the coordination ends

Run as `python tests/faulty_worker.py` with the worker's environment.
"""
import asyncio
import os
import sys

from streams.kafka import transactions, worker
from streams.kafka.transactions import PartitionTransactions, Transaction

FAIL_AT = int(os.environ.get("ANPI_TEST_FAIL_AT_SEND", "0"))
HANG_AFTER = int(os.environ.get("ANPI_TEST_HANG_AFTER", "0"))
BREAK_ASSIGNMENT = os.environ.get("ANPI_TEST_BREAK_ASSIGNMENT") == "1"


class BrokenSend:
    """The transactional producer, whose send of the FAIL_AT-th record raises."""
    sent = 0

    def __init__(self, producer):
        self._producer = producer

    def __getattr__(self, name):
        return getattr(self._producer, name)

    def _count(self, records: int) -> None:
        before, BrokenSend.sent = BrokenSend.sent, BrokenSend.sent + records
        if before < FAIL_AT <= BrokenSend.sent:
            raise ConnectionError("injected: the broker went away mid-batch")

    async def send(self, *args, **kwargs):
        self._count(1)
        return await self._producer.send(*args, **kwargs)

    async def send_batch(self, batch, *args, **kwargs):
        self._count(batch.record_count())
        return await self._producer.send_batch(batch, *args, **kwargs)


_proxies: dict[int, BrokenSend] = {}
_of, _wait_for = PartitionTransactions.of, PartitionTransactions.wait_for
_batches = [0]


def of(self, number):
    txn = _of(self, number)
    if txn is None or not FAIL_AT:
        return txn
    proxy = _proxies.setdefault(id(txn.producer), BrokenSend(txn.producer))  # the same one each time: equal
    return Transaction(proxy, txn.lock)


async def wait_for(self, number, timeout: float = 60.0):
    _batches[0] += 1
    if HANG_AFTER and _batches[0] > HANG_AFTER:
        await asyncio.Event().wait()
    await _wait_for(self, number, timeout)
    return self.of(number)


PartitionTransactions.of, PartitionTransactions.wait_for = of, wait_for

if BREAK_ASSIGNMENT:
    from faust.assignor.partition_assignor import PartitionAssignor

    def on_assignment(self, assignment):
        raise AssertionError("injected: the assignment does not match this worker")

    PartitionAssignor.on_assignment = on_assignment
assert transactions.PartitionTransactions is PartitionTransactions

if __name__ == "__main__":
    sys.exit(worker.main(*(sys.argv[1:2])))
