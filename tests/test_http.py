"""Rate limiter, backoff and retry policy (spidergan.http), with a fake clock."""

from __future__ import annotations

import random

import pytest
import requests

from spidergan.http import Backoff, GaveUp, HTTPStatusError, RateLimiter, TransientError, retry


class FakeClock:
    def __init__(self):
        self.t = 0.0
        self.sleeps = []

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.sleeps.append(s)
        self.t += s


def test_rate_limiter_keeps_the_hourly_budget():
    clock = FakeClock()
    lim = RateLimiter(3600, burst=3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        lim.acquire()
    assert clock.t == 0  # the burst passes at once
    for _ in range(10):
        lim.acquire()
    step = 3600 / (3600 - 3)  # burst + rate * 1 h == the hourly budget
    assert clock.t == pytest.approx(10 * step, abs=1e-6)  # then about one call a second
    clock.t += 100  # idle: the bucket refills only up to the burst
    start = clock.t
    for _ in range(5):
        lim.acquire()
    assert clock.t - start == pytest.approx(2 * step, abs=1e-6)


def test_rate_limiter_never_exceeds_the_budget_in_an_hour():
    clock = FakeClock()
    lim = RateLimiter(3600, clock=clock, sleep=clock.sleep)
    n = 0
    while True:
        lim.acquire()
        if clock.t > 3600:
            break
        n += 1
    assert 3590 <= n <= 3600


def test_default_burst_is_small():
    assert RateLimiter(3600).burst == 36 and RateLimiter(50).burst == 1


def test_backoff_is_exponential_jittered_capped_and_honours_retry_after():
    b = Backoff(base_s=1.0, cap_s=8.0, rng=random.Random(0))
    for attempt in range(1, 8):
        ds = [b.delay(attempt) for _ in range(200)]
        ceiling = min(8.0, 2 ** (attempt - 1))
        assert max(ds) <= ceiling and min(ds) >= 0 and max(ds) > ceiling * 0.8
    assert b.delay(1, retry_after=5.0) >= 5.0
    assert b.delay(1, retry_after=500.0) <= 8.0


def test_retry_classifies_errors():
    clock = FakeClock()
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise requests.ConnectionError("reset")
        if len(calls) == 2:
            raise TransientError("HTTP 429", retry_after=3.0)
        return "ok"

    assert retry(flaky, max_tries=3, backoff=Backoff(0.1, 10), sleep=clock.sleep) == "ok"
    assert len(calls) == 3 and clock.sleeps[1] >= 3.0

    def always():
        raise requests.Timeout("slow")

    with pytest.raises(GaveUp) as ei:
        retry(always, max_tries=4, backoff=Backoff(0.1, 1), sleep=clock.sleep)
    assert ei.value.tries == 4 and "Timeout" in ei.value.reason

    n = []

    def not_found():
        n.append(1)
        raise HTTPStatusError(404, "HTTP 404")

    with pytest.raises(HTTPStatusError):
        retry(not_found, max_tries=5, backoff=Backoff(0.1, 1), sleep=clock.sleep)
    assert len(n) == 1
