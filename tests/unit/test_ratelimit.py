"""The token bucket: a burst, then the rate; small rates; 0 is unlimited. The dispatcher's use of it
is in test_dispatcher_faults.py."""

from __future__ import annotations

import pytest
from fakes import FakeClock

from edge_runtime.events.ratelimit import TokenBucket


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, clock=clock)  # 1 per second, burst of 10 (ten seconds' worth)
    for _ in range(10):
        assert bucket.wait_time() == 0.0
        bucket.take()
    assert bucket.wait_time() == pytest.approx(1.0)
    clock.now += 0.25
    assert bucket.wait_time() == pytest.approx(0.75)
    assert bucket.wait_time() == pytest.approx(0.75), "wait_time does not take"
    clock.now += 0.75
    assert bucket.wait_time() == 0.0
    bucket.take()
    assert bucket.wait_time() == pytest.approx(1.0)
    clock.now += 3600  # a long pause refills up to the burst, not beyond
    for _ in range(10):
        assert bucket.wait_time() == 0.0
        bucket.take()
    assert bucket.wait_time() > 0


def test_token_bucket_small_rates_and_explicit_burst() -> None:
    clock = FakeClock()
    slow = TokenBucket(3, clock=clock)  # one per 20 s, burst at least one
    assert slow.wait_time() == 0.0
    slow.take()
    assert slow.wait_time() == pytest.approx(20.0)
    strict = TokenBucket(120, burst=1, clock=clock)
    strict.take()
    assert strict.wait_time() == pytest.approx(0.5)


def test_token_bucket_zero_is_unlimited() -> None:
    clock = FakeClock()
    bucket = TokenBucket(0, clock=clock)
    for _ in range(1000):
        assert bucket.wait_time() == 0.0
        bucket.take()
