"""The BAP's bound on searches in flight (bap/backpressure.py): accepted searches hold a slot until every
BPP of their fan-out has answered or their ttl has passed; beyond the bound the client API answers 429."""

from __future__ import annotations

from bap.backpressure import SearchesInFlight


def test_a_slot_is_held_until_every_bpp_answers_or_the_search_times_out() -> None:
    t = [0.0]
    f = SearchesInFlight(limit=2, timeout_s=30, now=lambda: t[0])
    assert f.reserve() is None
    f.opened("tx1", ["a", "b"])
    assert f.reserve() is None
    f.opened("tx2", ["a"])
    assert len(f) == 2
    retry = f.reserve()
    assert retry is not None and 1 <= retry <= 5  # full: Retry-After
    f.answered("tx1", "a")
    assert f.reserve() is not None  # tx1 still waits for b
    f.answered("tx1", "b")
    assert f.reserve() is None  # tx1's fan-out completed: its slot is free
    assert f.reserve() == 5  # full again: one in flight, one completion in 5 s → come back in 5 s
    f.release()  # … and that search was not accepted after all
    assert len(f) == 1
    t[0] = 31.0  # tx2 times out
    assert len(f) == 0
    f.answered("tx2", "a")  # a late answer changes nothing


def test_a_search_reaching_no_bpp_holds_no_slot_and_zero_is_unbounded() -> None:
    f = SearchesInFlight(limit=1, timeout_s=30)
    assert f.reserve() is None
    f.opened("tx", [])
    assert len(f) == 0
    unbounded = SearchesInFlight(limit=0, timeout_s=30)
    for i in range(100):
        assert unbounded.reserve() is None
        unbounded.opened(f"tx{i}", ["a"])


def test_retry_after_is_about_one_fan_out_at_the_recent_completion_rate() -> None:
    t = [0.0]
    f = SearchesInFlight(limit=2, timeout_s=30, now=lambda: t[0])
    for i in range(20):  # 20 fan-outs completed in the last 5 s: 4/s
        assert f.reserve() is None
        f.opened(f"done{i}", ["a"])
        f.answered(f"done{i}", "a")
    for tx in ("x", "y"):
        assert f.reserve() is None
        f.opened(tx, ["a"])
    assert f.reserve() == 1  # 2 in flight at 4/s: half a second, at least 1
    t[0] = 10.0  # nothing completed lately: until the oldest times out, at most 5 s
    assert f.reserve() == 5


def test_a_bpp_that_let_a_search_time_out_is_not_waited_for_until_it_answers() -> None:
    t = [0.0]
    f = SearchesInFlight(limit=10, timeout_s=30, now=lambda: t[0])
    f.reserve()
    f.opened("tx1", ["alive", "dead"])
    f.answered("tx1", "alive")
    assert len(f) == 1  # still waiting for dead
    t[0] = 31.0
    assert len(f) == 0  # timed out: dead is now silent
    f.reserve()
    f.opened("tx2", ["alive", "dead"])
    f.answered("tx2", "alive")
    assert len(f) == 0  # complete without dead
    f.answered("tx-late", "dead")  # dead answers again (late, for anything)
    f.reserve()
    f.opened("tx3", ["alive", "dead"])
    f.answered("tx3", "alive")
    assert len(f) == 1  # waited for again
