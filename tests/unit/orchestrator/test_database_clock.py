"""``postgres.DatabaseClock``: the server's clock read every few seconds and carried forward with the
monotonic clock. The readings here come from a function standing in for the query, so that a
reading can be made late, early or slow on purpose; the real query runs in every PostgreSQL test
(``test_replicas.test_leases_are_timed_by_the_database_clock`` pins it to the server's clock)."""

from __future__ import annotations

import time

from orchestrator.store.postgres import DatabaseClock

DAY_US = 86_400_000_000


def test_the_estimate_follows_the_servers_clock_not_this_process_clock() -> None:
    clock = DatabaseClock()
    assert clock.due()
    server_us = time.time_ns() // 1000 + DAY_US  # a server a day ahead of us
    clock.sample(lambda: server_us)
    assert not clock.due()
    first = clock.now_ms()
    assert abs(first - server_us // 1000) < 1_000
    time.sleep(0.05)
    later = clock.now_ms()
    assert 40 <= later - first < 1_000  # carried forward by the time that passed here


def test_the_estimate_never_goes_backwards_when_a_reading_is_earlier() -> None:
    clock = DatabaseClock(resync_s=0)
    now_us = time.time_ns() // 1000
    clock.sample(lambda: now_us)
    before = clock.now_ms()
    clock.sample(lambda: now_us - 5_000_000)  # the server's clock was stepped back 5 s
    assert clock.now_ms() >= before
    assert clock.due()  # resync_s=0: every transaction reads again


def test_a_slow_reading_does_not_replace_a_fresh_one() -> None:
    clock = DatabaseClock()
    now_us = time.time_ns() // 1000
    clock.sample(lambda: now_us)

    def slow() -> int:
        time.sleep(0.02)  # a round trip of 20 ms says little about when the server read its clock
        return now_us + DAY_US

    clock.sample(slow)
    assert abs(clock.now_ms() - now_us // 1000) < 1_000
