"""Which subjects have a timer due by a given instant: a heap with lazy deletion.

A tick costs O(due log n): it pops only entries that are due (and stale ones, each once), and
never scans the subjects. Rebuilt from the state table when a partition is assigned.
"""
from __future__ import annotations

import heapq
from collections.abc import Iterable


class DueIndex:
    def __init__(self, entries: Iterable[tuple[str, int | None]] = ()):
        self._due: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self.rebuild(entries)

    def rebuild(self, entries: Iterable[tuple[str, int | None]]) -> None:
        self._due = {subject: due for subject, due in entries if due is not None}
        self._heap = [(due, subject) for subject, due in self._due.items()]
        heapq.heapify(self._heap)

    def set(self, subject: str, due: int | None) -> None:
        if due is None:
            self._due.pop(subject, None)  # its heap entry goes stale and is dropped when reached
            return
        if self._due.get(subject) == due:
            return
        self._due[subject] = due
        heapq.heappush(self._heap, (due, subject))
        if len(self._heap) > 2 * len(self._due) + 1024:
            self.rebuild(list(self._due.items()))  # too many stale entries: keep memory bounded

    def pop_due(self, now: int) -> list[str]:
        """Subjects due at or before `now`, earliest first. They leave the index; set() them again."""
        heap, current, out = self._heap, self._due, []
        while heap and heap[0][0] <= now:
            due, subject = heapq.heappop(heap)
            if current.get(subject) == due:
                del current[subject]
                out.append(subject)
        return out

    def peek(self) -> int | None:
        """The earliest due instant, or None."""
        heap, current = self._heap, self._due
        while heap and current.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def due_of(self, subject: str) -> int | None:
        return self._due.get(subject)

    def __len__(self) -> int:
        return len(self._due)
