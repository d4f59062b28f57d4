# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""ElasticExecutor and the rate limiter's latency, with real threads."""

import threading

import pytest

from nodepool.driver.elastic import (
    MAX_WORKERS, ElasticExecutor, fixed_target, limiter_target)
from nodepool.driver.ratelimit import AdaptiveRateLimiter, RateLimiter
from tests.fixtures.waits import wait_for
from tests.unit.test_ratelimit import FakeClock


@pytest.fixture
def pools():
    made = []

    def make(target, **kwargs):
        pool = ElasticExecutor("test", target, **kwargs)
        made.append(pool)
        return pool
    yield make
    for pool in made:
        pool.shutdown(wait=True, cancel_futures=True)


def blocked(pool, count, gate):
    return [pool.submit(gate.wait, 30) for _ in range(count)]


def test_grows_to_its_target_while_work_waits(pools):
    pool = pools(fixed_target(3))
    gate = threading.Event()
    futures = blocked(pool, 5, gate)
    assert pool.size == 3
    # Two wait for a thread; none runs twice.
    assert sum(f.running() for f in futures) <= 3
    gate.set()
    assert [f.result(30) for f in futures] == [True] * 5
    assert pool.size == 3


def test_grows_when_the_target_grows_after_the_work_came(pools):
    """All the work may arrive before the first call measured what the
    target depends on: the pool grows as calls finish, not only on
    submit."""
    wanted = [2]
    pool = pools(lambda: wanted[0])
    gate, measured = threading.Event(), threading.Event()

    def measure():
        measured.wait(30)
        wanted[0] = 4
    futures = [pool.submit(measure)] + blocked(pool, 5, gate)
    assert pool.size == 2
    measured.set()
    wait_for(lambda: pool.size == 4)
    gate.set()
    for f in futures[1:]:
        assert f.result(30) is True


def test_above_its_target_the_pool_shrinks_to_it(pools):
    wanted = [4]
    pool = pools(lambda: wanted[0], idle_timeout=3600)
    gate = threading.Event()
    futures = blocked(pool, 4, gate)
    gate.set()
    for f in futures:
        f.result(30)
    wait_for(lambda: pool._idle == 4)
    wanted[0] = 2
    # Idle threads look again within SHRINK_POLL, down to the target.
    wait_for(lambda: pool.size == 2)
    results = [pool.submit(lambda: 1).result(30) for _ in range(3)]
    assert results == [1, 1, 1] and pool.size == 2


def test_a_free_thread_takes_new_work(pools):
    pool = pools(fixed_target(8))
    for n in range(5):
        assert pool.submit(lambda x: x * 2, n).result(30) == n * 2
        wait_for(lambda: pool._idle == 1)
    assert pool.size == 1


def test_idle_threads_end_down_to_the_minimum(pools):
    pool = pools(fixed_target(4), minimum=2, idle_timeout=0.1)
    gate = threading.Event()
    futures = blocked(pool, 4, gate)
    assert pool.size == 4
    gate.set()
    for f in futures:
        f.result(30)
    wait_for(lambda: pool.size == 2)
    # The survivors still serve.
    assert pool.submit(lambda: "ok").result(30) == "ok"


def test_threads_leave_when_the_target_drops(pools):
    wanted = [4]
    pool = pools(lambda: wanted[0], idle_timeout=3600)
    gate = threading.Event()
    futures = blocked(pool, 4, gate)
    wanted[0] = 1
    gate.set()
    for f in futures:
        f.result(30)
    # Without waiting for the (hour-long) idle timeout.
    wait_for(lambda: pool.size == 1)


def test_errors_reach_the_future(pools):
    pool = pools(fixed_target(2))

    def fail():
        raise ValueError("boom")
    with pytest.raises(ValueError, match="boom"):
        pool.submit(fail).result(30)


def test_shutdown_cancels_queued_work_and_ends_threads(pools):
    pool = pools(fixed_target(1))
    gate = threading.Event()
    running, queued = blocked(pool, 2, gate)
    wait_for(running.running)
    pool.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)
    gate.set()
    assert running.result(30) is True
    wait_for(lambda: pool.size == 0)


def test_latency_is_a_moving_average_of_limited_calls():
    clock = FakeClock()
    limiter = RateLimiter("test", 10, clock=clock, sleep=clock.sleep)
    assert limiter.latency is None and limiter.concurrency() is None
    with limiter.limited(lambda msg: None, "call"):
        clock.now += 1.0
    assert limiter.latency == 1.0
    limiter.record_latency(2.0)
    assert limiter.latency == pytest.approx(1.2)
    assert limiter.concurrency() == pytest.approx(12.0)


def test_limiter_target():
    limiter = RateLimiter("test", 10)
    target = limiter_target(limiter, default=8)
    assert target() == 8  # nothing measured yet
    limiter.record_latency(1.2)
    assert target() == 15  # 10/s * 1.2 s * 1.25
    limiter.record_latency(100.0)
    assert target() == MAX_WORKERS
    fast = RateLimiter("fast", 2)
    fast.record_latency(0.1)
    assert limiter_target(fast, default=8)() == 8
    # An adaptive limiter slowed by throttling wants fewer.
    adaptive = AdaptiveRateLimiter("adaptive", 10)
    adaptive.record_latency(1.2)
    adaptive.throttled()
    assert limiter_target(adaptive, default=2)() == 8  # 5/s * 1.2 * 1.25
