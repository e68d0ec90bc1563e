"""The stepped simulated clock (kernel/clock.py SteppedClock): one file moves every reader forward, never back."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from kernel import clock
from kernel.config import Settings

START = datetime(2023, 1, 24, 6, 0, tzinfo=UTC)


def test_a_jump_written_once_is_seen_by_every_reader(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    clock.write_segment(path, START, speed=1.0)
    a, b = clock.SteppedClock(path), clock.SteppedClock(path)
    assert abs((a.now() - START).total_seconds()) < 5
    clock.advance_to(path, START.replace(hour=14))
    time.sleep(clock.SteppedClock.RELOAD_S * 2)
    for reader in (a, b):
        got = reader.now()
        assert START.replace(hour=14) <= got < START.replace(hour=14) + timedelta(seconds=5), got
    assert a.describe()["kind"] == "simulated" and a.describe()["stepped"] == str(path)


def test_advancing_to_an_earlier_instant_keeps_the_current_one(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    clock.write_segment(path, START.replace(hour=15), speed=1.0)
    kept = clock.advance_to(path, START)
    assert kept >= START.replace(hour=15)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=-7200, max_value=7200), min_size=1, max_size=6))
def test_a_reader_never_runs_backwards_even_if_the_file_does(tmp_path_factory: object, jumps_s: list[int]) -> None:
    path = Path(tmp_path_factory.mktemp("c")) / "clock.json"  # type: ignore[attr-defined]
    clock.write_segment(path, START, speed=60.0)
    reader = clock.SteppedClock(path)
    reader.RELOAD_S = 0.0
    seen = [reader.now_us()]
    for s in jumps_s:
        clock.write_segment(path, START + timedelta(seconds=s), speed=60.0)  # a hostile file: back and forth
        time.sleep(0.002)
        seen.append(reader.now_us())
    assert seen == sorted(seen)


def test_the_settings_choose_the_stepped_clock_and_pin_it_for_every_process(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    clock.write_segment(path, START)
    env = {"FLEXMARKET_CLOCK_FILE": str(path), "FLEXMARKET_CLOCK_START": "2020-01-01T00:00:00Z"}
    assert clock.pinned_env(env) == {"FLEXMARKET_CLOCK_FILE": str(path)}
    built = clock._from_settings(Settings(FLEXMARKET_CLOCK_FILE=str(path)))  # type: ignore[call-arg]
    assert isinstance(built, clock.SteppedClock) and built.now().year == 2023
