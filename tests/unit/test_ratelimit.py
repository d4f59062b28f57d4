# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""RateLimiter tests.

Timing is what is under test here, so real sleeps are unavoidable in the
threaded tests.  Lower bounds on spacing are asserted strictly (the limiter
must never let calls start too close together); upper bounds are loose so
that a loaded machine does not make the tests flaky.
"""

import threading
import time

import pytest

from nodepool.driver.ratelimit import RateLimiter


class FakeClock:
    """A manual clock whose sleep advances time instantly."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


class StartRecordingClock:
    """time.monotonic that remembers, per thread, the last value it read.

    The last clock read inside ``RateLimiter.wait`` is the start it records,
    so right after ``wait`` returns a thread can learn its exact start time
    without being exposed to scheduling delays after the lock is released.
    """

    def __init__(self):
        self._local = threading.local()

    def __call__(self):
        self._local.last = time.monotonic()
        return self._local.last

    @property
    def last(self):
        return self._local.last


def never_sleep(seconds):
    raise AssertionError("unexpected sleep(%r)" % (seconds,))


def test_first_call_does_not_wait():
    clock = FakeClock()
    limiter = RateLimiter("test", 1, clock=clock, sleep=never_sleep)
    assert limiter.wait() == 0.0


def test_second_call_right_after_first_waits_full_interval():
    clock = FakeClock()
    limiter = RateLimiter("test", 4, clock=clock, sleep=clock.sleep)
    limiter.wait()
    delay = limiter.wait()
    assert delay == pytest.approx(0.25)
    assert clock.sleeps == [pytest.approx(0.25)]


def test_call_duration_does_not_count():
    # Spacing is start to start: a call that already took 0.3s of a 0.5s
    # interval leaves only 0.2s to wait.
    clock = FakeClock()
    limiter = RateLimiter("test", 2, clock=clock, sleep=clock.sleep)
    with limiter:
        clock.now += 0.3
    assert limiter.wait() == pytest.approx(0.2)


def test_no_wait_once_interval_has_passed():
    clock = FakeClock()
    limiter = RateLimiter("test", 2, clock=clock, sleep=never_sleep)
    limiter.wait()
    clock.now += 0.6
    assert limiter.wait() == 0.0


def test_early_wakeup_sleeps_again():
    # A sleep that returns early must not let the call start too soon.
    clock = FakeClock()

    def short_sleep(seconds):
        clock.sleeps.append(seconds)
        clock.now += seconds / 2

    limiter = RateLimiter("test", 1, clock=clock, sleep=short_sleep)
    limiter.wait()
    start = clock.now
    limiter.wait()
    assert clock.now - start >= 1.0
    assert len(clock.sleeps) > 1


@pytest.mark.parametrize("rate", [0, None])
def test_unlimited_never_waits(rate):
    limiter = RateLimiter("test", rate, sleep=never_sleep)
    began = time.monotonic()
    for _ in range(1000):
        assert limiter.wait() == 0.0
        with limiter:
            pass
    # Loose: only guards against an accidental per-call sleep.
    assert time.monotonic() - began < 5


def test_negative_rate_rejected():
    with pytest.raises(ValueError):
        RateLimiter("test", -1)


def test_real_clock_second_call_waits():
    limiter = RateLimiter("test", 5)
    began = time.monotonic()
    first = limiter.wait()
    second = limiter.wait()
    assert first < 0.2
    assert time.monotonic() - began >= 0.2
    assert second > 0.0


def test_concurrent_threads_are_spaced_and_rate_is_kept():
    rate = 20.0
    threads_n, calls_n = 8, 5
    delta = 1.0 / rate
    clock = StartRecordingClock()
    limiter = RateLimiter("test", rate, clock=clock)
    starts = []
    starts_lock = threading.Lock()
    barrier = threading.Barrier(threads_n + 1)

    def worker():
        barrier.wait()
        for _ in range(calls_n):
            with limiter:
                start = clock.last
            with starts_lock:
                starts.append(start)

    threads = [threading.Thread(target=worker, name="ratelimit-%d" % i)
               for i in range(threads_n)]
    for t in threads:
        t.start()
    began = time.monotonic()
    barrier.wait()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()

    total = threads_n * calls_n
    assert len(starts) == total
    starts.sort()
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    # Strict: no burst, ever (1 ms slack for float rounding only).
    assert min(gaps) >= delta - 0.001
    assert starts[-1] - began >= (total - 1) * delta - 0.001
    # Loose: the achieved rate is near the configured one, not far below.
    achieved = (total - 1) / (starts[-1] - starts[0])
    assert achieved <= rate * 1.02
    assert achieved >= rate / 3


def test_limited_logs_duration_and_delay():
    clock = FakeClock()
    limiter = RateLimiter("test", 2, clock=clock, sleep=clock.sleep)
    messages = []
    with limiter.limited(messages.append, "Created instance") as call:
        clock.now += 0.125
    assert call.delay == 0.0
    with limiter.limited(messages.append, "Deleted instance"):
        clock.now += 1.5
    assert messages == [
        "Created instance in 0.125s after 0.000s delay",
        "Deleted instance in 1.500s after 0.375s delay",
    ]


def test_limited_logs_even_when_the_call_fails():
    clock = FakeClock()
    limiter = RateLimiter("test", None, clock=clock)
    messages = []
    with pytest.raises(RuntimeError):
        with limiter.limited(messages.append, "Listed servers"):
            clock.now += 2
            raise RuntimeError("boom")
    assert messages == ["Listed servers in 2.000s after 0.000s delay"]
