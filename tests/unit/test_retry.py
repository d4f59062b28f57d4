# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The shared Retrier, with fixed and adaptive limiters on a fake clock."""

import logging

import pytest

from nodepool.driver.aws import errors as aws_errors
from nodepool.driver.errors import ErrorClass
from nodepool.driver.openstack import errors as os_errors
from nodepool.driver.ratelimit import AdaptiveRateLimiter, RateLimiter
from nodepool.driver.retry import Retrier
from tests.unit.test_ratelimit import FakeClock

LOG = logging.getLogger("tests.retry")


class Refused(Exception):
    def __init__(self, kind, retry_after=None):
        super().__init__(kind.value)
        self.kind = kind
        self.retry_after = retry_after


def classify(error):
    return error.kind if isinstance(error, Refused) else ErrorClass.OTHER


class Cloud:
    """Answers calls from a script of errors, then with "ok"; each call
    waits on ``limiter`` first and records when it started."""

    def __init__(self, limiter, clock, script):
        self.limiter = limiter
        self.clock = clock
        self.script = list(script)
        self.starts = []

    def __call__(self):
        with self.limiter:
            self.starts.append(self.clock())
            if self.script:
                raise self.script.pop(0)
            return "ok"


def retrier(clock, **kwargs):
    kwargs.setdefault("throttle_delay", lambda attempt: 10.0 * attempt)
    kwargs.setdefault("retry_after", lambda error: error.retry_after)
    return Retrier(LOG, classify, sleep=clock.sleep, **kwargs)


def test_fixed_limiter_backs_off_in_the_retrier():
    clock = FakeClock()
    limiter = RateLimiter("t", 10, clock=clock, sleep=clock.sleep)
    cloud = Cloud(limiter, clock, [Refused(ErrorClass.THROTTLE)] * 2)
    assert retrier(clock).call("x", cloud, limiter=limiter) == "ok"
    assert clock.sleeps == [10.0, 20.0]
    assert limiter.current_rate == 10


def test_adaptive_limiter_paces_the_retries():
    clock = FakeClock()
    limiter = AdaptiveRateLimiter("t", 10, cut_gap=0.0, quiet=1e9,
                                  clock=clock, sleep=clock.sleep)
    cloud = Cloud(limiter, clock, [Refused(ErrorClass.THROTTLE)] * 2)
    assert retrier(clock).call("x", cloud, limiter=limiter) == "ok"
    # No backoff of the retrier's own: the limiter spaces the tries at
    # the rate each throttle left (10/s -> 5/s -> 2.5/s).
    assert limiter.throttle_count == 2
    assert limiter.current_rate == 2.5
    gaps = [b - a for a, b in zip(cloud.starts, cloud.starts[1:])]
    assert gaps == pytest.approx([0.2, 0.4])


def test_retry_after_holds_the_limiter_for_every_caller():
    clock = FakeClock()
    limiter = AdaptiveRateLimiter("t", 10, clock=clock, sleep=clock.sleep)
    cloud = Cloud(limiter, clock, [Refused(ErrorClass.THROTTLE, 3.0)])
    assert retrier(clock).call("x", cloud, limiter=limiter) == "ok"
    assert cloud.starts[1] - cloud.starts[0] == pytest.approx(3.0)
    # Another caller of the same limiter right after the retry waits the
    # cut rate's spacing.
    assert limiter.wait() == pytest.approx(0.2)


def test_fixed_limiter_sleeps_retry_after():
    clock = FakeClock()
    limiter = RateLimiter("t", 10, clock=clock, sleep=clock.sleep)
    cloud = Cloud(limiter, clock, [Refused(ErrorClass.THROTTLE, 3.0)])
    retrier(clock).call("x", cloud, limiter=limiter)
    assert clock.sleeps == [3.0]


def test_gives_up_after_the_tries():
    clock = FakeClock()
    limiter = AdaptiveRateLimiter("t", 10, clock=clock, sleep=clock.sleep)
    cloud = Cloud(limiter, clock, [Refused(ErrorClass.THROTTLE)] * 3)
    with pytest.raises(Refused):
        retrier(clock, throttle_tries=3).call("x", cloud, limiter=limiter)
    assert len(cloud.starts) == 3


def test_too_long_retry_after_fails_at_once():
    clock = FakeClock()
    limiter = AdaptiveRateLimiter("t", 10, clock=clock, sleep=clock.sleep)
    cloud = Cloud(limiter, clock, [Refused(ErrorClass.THROTTLE, 60.0)])
    with pytest.raises(Refused):
        retrier(clock, max_retry_after=30.0).call("x", cloud,
                                                  limiter=limiter)
    assert len(cloud.starts) == 1


def test_server_errors_retried_only_when_configured():
    clock = FakeClock()
    limiter = RateLimiter("t", None, clock=clock, sleep=clock.sleep)
    cloud = Cloud(limiter, clock, [Refused(ErrorClass.SERVER)])
    with pytest.raises(Refused):
        retrier(clock).call("x", cloud, limiter=limiter)
    cloud = Cloud(limiter, clock, [Refused(ErrorClass.SERVER)] * 2)
    r = retrier(clock, server_tries=3, server_delay=lambda a: 0.5 * a)
    assert r.call("x", cloud, limiter=limiter) == "ok"
    assert clock.sleeps == [0.5, 1.0]


def test_other_errors_propagate():
    clock = FakeClock()
    limiter = AdaptiveRateLimiter("t", 10, clock=clock, sleep=clock.sleep)
    cloud = Cloud(limiter, clock, [Refused(ErrorClass.QUOTA)])
    with pytest.raises(Refused):
        retrier(clock, server_tries=3).call("x", cloud, limiter=limiter)
    assert limiter.throttle_count == 0


def test_driver_configurations():
    # AWS: exponential throttle backoff, three tries for server errors.
    clock = FakeClock()
    r = aws_errors.make_retrier(LOG, sleep=clock.sleep)
    assert (r.throttle_tries, r.server_tries) == (6, 3)
    assert [r.throttle_delay(a) for a in (1, 2, 6)] == [1.0, 2.0, 20.0]
    assert [r.server_delay(a) for a in (1, 2)] == [0.5, 1.0]
    # OpenStack: throttling only, Retry-After up to 30 s.
    r = os_errors.make_retrier(LOG, sleep=clock.sleep)
    assert (r.throttle_tries, r.server_tries) == (6, 0)
    assert r.max_retry_after == os_errors.MAX_RETRY_AFTER
    assert [r.throttle_delay(a) for a in (1, 3)] == [1.0, 3.0]
