"""The due-index against the obvious model: a dict scanned in full."""
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.due_index import DueIndex

subjects = st.sampled_from([f"S{i}" for i in range(30)])
ops = st.lists(st.one_of(
    st.tuples(st.just("set"), subjects, st.one_of(st.none(), st.integers(0, 200))),
    st.tuples(st.just("pop"), st.integers(0, 220)),
    st.tuples(st.just("pop"), st.integers(0, 220), st.integers(0, 12)),   # with a limit
    st.tuples(st.just("peek")),
), max_size=300)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(subjects, st.integers(0, 200))), ops)
def test_due_index_never_misses_or_invents_a_due_subject(initial, operations):
    model = {s: d for s, d in initial}
    index = DueIndex(list(model.items()))
    for op in operations:
        if op[0] == "set":
            _, subject, due = op
            index.set(subject, due)
            if due is None:
                model.pop(subject, None)
            else:
                model[subject] = due
        elif op[0] == "pop":
            now, limit = op[1], (op[2] if len(op) > 2 else None)
            expected = sorted((d, s) for s, d in model.items() if d <= now)[:limit]
            assert index.pop_due(now, limit) == [s for _, s in expected]
            for _, s in expected:
                del model[s]
        else:
            assert index.peek() == (min(model.values()) if model else None)
        assert len(index) == len(model)


def test_stale_entries_do_not_grow_the_heap_without_bound():
    index = DueIndex()
    for i in range(100_000):
        index.set("S1", i)  # one subject rescheduled over and over
    assert index._entries <= 2 * len(index) + 1024 + 1
    assert index.pop_due(10**9) == ["S1"]


def test_a_tick_pops_only_what_is_due():
    index = DueIndex((f"S{i}", 1000 + i) for i in range(10_000))
    assert index.pop_due(1002) == ["S0", "S1", "S2"]
    assert len(index) == 9_997 and index.peek() == 1003


def test_a_tick_with_a_limit_leaves_the_rest_due_in_order_for_the_next():
    index = DueIndex([(f"S{i:02d}", 1000 + i // 10) for i in range(30)])   # ten subjects at each of 3 instants
    assert index.pop_due(1001, 7) == [f"S{i:02d}" for i in range(7)]
    assert index.pop_due(1001, 7) == [f"S{i:02d}" for i in range(7, 14)]   # the rest of 1000, then 1001's
    index.set("S15", 1000)                                                  # rescheduled meanwhile: first now
    assert index.pop_due(1001) == ["S15", *(f"S{i:02d}" for i in range(14, 20) if i != 15)]
    assert index.peek() == 1002 and len(index) == 10
