"""HTTP politeness and resilience: a client-side rate limiter and retries with backoff.

Flickr allows 3,600 API calls an hour per key; `RateLimiter` keeps a process under such a
budget (a token bucket shared by threads). `retry` repeats a call that failed transiently
(5xx, 429, timeouts, dropped connections, short bodies) with exponential backoff and full
jitter, honouring a server's Retry-After up to the backoff cap, and gives up after a bounded
number of tries with the last error.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Callable, TypeVar

import requests

T = TypeVar("T")


class TransientError(Exception):
    """A failure worth retrying (server busy, connection trouble)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class HTTPStatusError(Exception):
    """A non-success HTTP status that retrying will not fix (404, 403, ...)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 520, 521, 522, 523, 524})


def check_status(resp: requests.Response) -> None:
    """Raise TransientError or HTTPStatusError for a non-2xx response (never the URL: it may
    carry credentials)."""
    if 200 <= resp.status_code < 300:
        return
    what = f"HTTP {resp.status_code} {resp.reason or ''}".strip()
    if resp.status_code in RETRY_STATUSES:
        raise TransientError(what, retry_after=_retry_after(resp.headers.get("Retry-After")))
    raise HTTPStatusError(resp.status_code, what)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare, and the backoff covers it


def is_transient(exc: BaseException) -> bool:
    """Connection-level failures that a new attempt may not meet."""
    return isinstance(exc, (TransientError, requests.Timeout, requests.ConnectionError,
                            requests.exceptions.ChunkedEncodingError,
                            requests.exceptions.ContentDecodingError))


class RateLimiter:
    """Token bucket: at most `burst` calls at once, then a steady rate.

    Over any window of T seconds at most burst + rate*T calls pass; the rate is set so that this
    is exactly `calls_per_hour` for T = one hour. The burst is 1% of the budget (at least 1).
    """

    def __init__(self, calls_per_hour: float, burst: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.burst = burst if burst is not None else max(1, int(calls_per_hour // 100))
        self.rate = max(calls_per_hour - self.burst, 1) / 3600.0
        self._tokens = float(self.burst)
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()
        self.waited_s = 0.0

    def acquire(self) -> None:
        """Take one call's token, sleeping until it is due. Callers reserve in turn (the balance
        may go negative), so concurrent callers queue fairly and no loop spins on float error."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1.0
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        if wait > 0:
            self.waited_s += wait
            self._sleep(wait)


class Backoff:
    """Delays for attempt 1, 2, ...: uniform in [0, min(cap, base * 2**(n-1))] (full jitter)."""

    def __init__(self, base_s: float = 1.0, cap_s: float = 60.0, rng: random.Random | None = None):
        self.base_s = base_s
        self.cap_s = cap_s
        self._rng = rng or random.Random()
        self._lock = threading.Lock()

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        ceiling = min(self.cap_s, self.base_s * (2 ** (attempt - 1)))
        with self._lock:
            d = self._rng.uniform(0.0, ceiling)
        if retry_after is not None:
            d = max(d, min(retry_after, self.cap_s))
        return d


class GaveUp(Exception):
    """All tries failed; `reason` is the last error in words, `tries` how many were made."""

    def __init__(self, reason: str, tries: int):
        super().__init__(f"gave up after {tries} tries: {reason}")
        self.reason = reason
        self.tries = tries


def retry(fn: Callable[[], T], *, max_tries: int, backoff: Backoff,
          retryable: Callable[[BaseException], bool] = is_transient,
          describe: Callable[[BaseException], str] = lambda e: f"{type(e).__name__}: {e}",
          sleep: Callable[[float], None] = time.sleep,
          on_retry: Callable[[int, BaseException], None] | None = None) -> T:
    """Call `fn` until it succeeds, a non-retryable error escapes, or `max_tries` is reached."""
    for attempt in range(1, max_tries + 1):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - classified just below
            if not retryable(e):
                raise
            if attempt == max_tries:
                raise GaveUp(describe(e), attempt) from None
            if on_retry is not None:
                on_retry(attempt, e)
            sleep(backoff.delay(attempt, getattr(e, "retry_after", None)))
    raise AssertionError("unreachable")  # pragma: no cover
