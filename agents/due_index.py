"""Which subjects have a timer due by a given instant.

Timers cluster: residents pick from a few check times, and every resend and escalation keeps its
check's offset, so thousands of subjects fall due at the same instant. The index is a heap of the
distinct due instants, each with a bucket of subjects: rescheduling is an append (plus a heap push
only for a new instant), a tick costs O(due + instants log n) and never scans the subjects.
Rescheduled subjects leave stale bucket entries behind, dropped when their bucket is reached (and
all at once if they pile up). Rebuilt from the state table when a partition is assigned.
"""
from __future__ import annotations

import heapq
from collections.abc import Iterable


class DueIndex:
    def __init__(self, entries: Iterable[tuple[str, int | None]] = ()):
        self.rebuild(entries)

    def rebuild(self, entries: Iterable[tuple[str, int | None]]) -> None:
        """From (subject, due) pairs, a later pair of a subject replacing an earlier one: as `set` on
        each in turn, in one pass (a partition taken with a million subjects)."""
        current: dict[str, int] = dict(entries)
        for subject in [subject for subject, due in current.items() if due is None]:
            del current[subject]
        buckets: dict[int, list[str]] = {}
        for subject, due in current.items():
            bucket = buckets.get(due)
            if bucket is None:
                buckets[due] = [subject]
            else:
                bucket.append(subject)
        self._due = current
        self._buckets = buckets
        self._live = {due: len(bucket) for due, bucket in buckets.items()}  # instant -> subjects due then
        self._times = list(buckets)   # heap of the instants that have a bucket
        heapq.heapify(self._times)
        self._entries = len(current)  # bucket entries, live and stale

    def dues(self) -> dict[str, int]:
        """Each subject's due instant (a copy; the subjects with none are not in it)."""
        return dict(self._due)

    def set(self, subject: str, due: int | None) -> None:
        current = self._due
        old = current.get(subject)
        if old == due:
            return
        if old is not None:
            self._live[old] -= 1
        if due is None:
            del current[subject]
            return
        current[subject] = due
        bucket = self._buckets.get(due)
        if bucket is None:
            self._buckets[due] = [subject]
            self._live[due] = 1
            heapq.heappush(self._times, due)
        else:
            bucket.append(subject)
            self._live[due] += 1
        self._entries += 1
        if self._entries > 2 * len(current) + 1024:
            self.rebuild(list(current.items()))  # too many stale entries: keep memory bounded

    def pop_due(self, now: int, limit: int | None = None) -> list[str]:
        """Subjects due at or before `now`, by (due, subject), at most `limit` of them (the others stay
        due, for the next call). They leave the index; set() them again."""
        times, buckets, current, out = self._times, self._buckets, self._due, []
        while times and times[0] <= now:
            due = times[0]
            bucket = buckets[due]
            ready = sorted({subject for subject in bucket if current.get(subject) == due})
            if limit is not None and len(out) + len(ready) > limit:  # this instant's subjects, in part
                taken = ready[:limit - len(out)]
                buckets[due] = ready[len(taken):]   # live, sorted, once each
                self._live[due] = len(ready) - len(taken)
                self._entries -= len(bucket) - len(buckets[due])
                for subject in taken:
                    del current[subject]
                return out + taken
            heapq.heappop(times)
            del buckets[due], self._live[due]
            self._entries -= len(bucket)
            for subject in ready:
                del current[subject]
            out += ready
        return out

    def peek(self) -> int | None:
        """The earliest due instant, or None."""
        times, live = self._times, self._live
        while times and not live[times[0]]:
            due = heapq.heappop(times)
            self._entries -= len(self._buckets.pop(due))
            del live[due]
        return times[0] if times else None

    def __len__(self) -> int:
        return len(self._due)
