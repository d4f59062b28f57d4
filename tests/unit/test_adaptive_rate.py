# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""AdaptiveRateLimiter tests, on a manual clock."""

import threading

import pytest

from nodepool.driver.ratelimit import (
    AdaptiveRateGroup, AdaptiveRateLimiter, RateLimiter, make_limiter,
    provider_limiters)
from tests.unit.test_ratelimit import FakeClock


def limiter(rate=20.0, **kwargs):
    clock = FakeClock()
    return clock, AdaptiveRateLimiter("test", rate, clock=clock,
                                      sleep=clock.sleep, **kwargs)


def test_starts_at_the_ceiling():
    clock, lim = limiter(20.0)
    assert lim.adaptive
    assert lim.current_rate == 20.0
    lim.wait()
    assert lim.wait() == pytest.approx(0.05)


def test_throttle_cuts_the_rate_and_spacing_follows():
    clock, lim = limiter(20.0)
    lim.wait()
    lim.throttled()
    assert lim.current_rate == 10.0
    assert lim.wait() == pytest.approx(0.1)
    assert lim.throttle_count == 1


def test_one_burst_of_throttles_cuts_once():
    clock, lim = limiter(20.0, cut_gap=1.0, quiet=2.0)
    for _ in range(5):
        lim.throttled()
    assert lim.current_rate == 10.0
    assert lim.throttle_count == 5
    clock.now += 1.0
    lim.throttled()
    assert lim.current_rate == 5.0


def test_a_call_sent_after_a_cut_cuts_again():
    clock, lim = limiter(20.0)
    rates = []

    def call_and_report():
        lim.wait()
        lim.throttled()
        rates.append(lim.current_rate)

    # Each in a thread of its own (the limiter knows a call's start per
    # thread); each call starts after the previous cut.
    for _ in range(3):
        t = threading.Thread(target=call_and_report)
        t.start()
        t.join()
    assert rates == [10.0, 5.0, 2.5]


def test_throttles_of_one_wave_cut_once():
    clock, lim = limiter(20.0)
    started = []
    barrier = threading.Barrier(3)

    def worker():
        lim.wait()
        started.append(clock())
        barrier.wait()  # all three calls are out before any answer
        lim.throttled()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(started) == 3
    assert lim.throttle_count == 3
    assert lim.current_rate == 10.0


def test_floor():
    clock, lim = limiter(20.0, cut_gap=0.0)
    for _ in range(20):
        lim.throttled()
    assert lim.current_rate == 1.0  # a twentieth of the ceiling
    clock, lim = limiter(1.0, cut_gap=0.0)
    for _ in range(20):
        lim.throttled()
    assert lim.current_rate == 0.1  # at least 0.1/s
    clock, lim = limiter(0.05, cut_gap=0.0)
    lim.throttled()
    assert lim.current_rate == 0.05  # never above the ceiling


def test_quiet_periods_recover_additively_up_to_the_ceiling():
    clock, lim = limiter(20.0, quiet=2.0, increase=1.0)
    lim.throttled()
    assert lim.current_rate == 10.0
    clock.now += 1.9
    assert lim.current_rate == 10.0
    clock.now += 0.1
    assert lim.current_rate == 11.0
    clock.now += 6.0
    assert lim.current_rate == 14.0
    clock.now += 100.0
    assert lim.current_rate == 20.0
    clock.now += 100.0
    assert lim.current_rate == 20.0


def test_a_throttle_restarts_the_quiet_period():
    clock, lim = limiter(20.0, quiet=2.0, increase=1.0, cut_gap=5.0)
    lim.throttled()
    clock.now += 1.5
    lim.throttled()  # within the cut gap: no cut, but not quiet either
    assert lim.current_rate == 10.0
    clock.now += 1.5
    assert lim.current_rate == 10.0
    clock.now += 0.5
    assert lim.current_rate == 11.0


def test_retry_after_holds_every_call():
    clock, lim = limiter(20.0)
    lim.wait()
    lim.throttled(retry_after=3.0)
    assert lim.wait() == pytest.approx(3.0)
    # After the hold, the cut rate's spacing applies.
    assert lim.wait() == pytest.approx(0.1)


def test_retry_after_without_a_ceiling():
    clock, lim = limiter(None)
    assert lim.current_rate is None
    assert lim.wait() == 0.0
    lim.throttled(retry_after=2.0)
    assert lim.current_rate is None
    assert lim.wait() == pytest.approx(2.0)
    assert lim.wait() == 0.0


def test_fixed_limiter_ignores_throttles():
    clock = FakeClock()
    lim = RateLimiter("test", 4, clock=clock, sleep=clock.sleep)
    assert not lim.adaptive
    lim.wait()
    lim.throttled(retry_after=5.0)
    assert lim.current_rate == 4
    assert lim.wait() == pytest.approx(0.25)


def test_make_limiter():
    assert type(make_limiter("a", 2.0, False)) is RateLimiter
    assert type(make_limiter("a", 2.0, True)) is AdaptiveRateLimiter


def test_provider_limiters():
    fixed = provider_limiters("aws", "ec2", dict(mutate=2.0, read=20.0),
                              False)
    assert [(k, type(v), v.rate, v.name) for k, v in fixed.items()] == [
        ("mutate", RateLimiter, 2.0, "aws-mutate-ec2"),
        ("read", RateLimiter, 20.0, "aws-read-ec2")]
    grouped = provider_limiters("aws", "ec2", dict(mutate=2.0, read=20.0),
                                True)
    assert [(k, type(v), v.ceiling, v.name) for k, v in grouped.items()] == [
        ("mutate", AdaptiveRateLimiter, 2.0, "aws-mutate-ec2"),
        ("read", AdaptiveRateLimiter, 20.0, "aws-read-ec2")]
    group = grouped["mutate"].group
    assert grouped["read"].group is group
    assert group.base == 2.0  # the lowest ceiling
    unlimited = provider_limiters("os", "c", dict(compute=None), True)
    assert unlimited["compute"].group.base is None


def group_of(**ceilings):
    clock = FakeClock()
    group = AdaptiveRateGroup("test", min(ceilings.values()), clock=clock,
                              quiet=2.0)
    return clock, {key: group.limiter(key, value, sleep=clock.sleep)
                   for key, value in ceilings.items()}


def test_members_space_their_own_calls_until_throttled():
    clock, lims = group_of(mutate=2.0, read=20.0)
    lims["mutate"].wait()
    # A read right after a create does not wait for the create's spacing.
    assert lims["read"].wait() == 0.0
    assert lims["read"].wait() == pytest.approx(0.05)
    assert lims["mutate"].wait() == pytest.approx(0.5 - 0.05)
    assert not lims["read"].group.slowed


def test_a_throttle_slows_every_member_of_the_group():
    clock, lims = group_of(mutate=2.0, read=20.0)
    cut = clock.now
    lims["mutate"].throttled()
    assert lims["mutate"].group.slowed
    # The group's rate (half its base) caps every member; both counted
    # the throttle.
    assert lims["mutate"].current_rate == 1.0
    assert lims["read"].current_rate == 1.0
    assert lims["read"].throttle_count == 1
    # Calls of all members now take turns at the group's rate.
    lims["read"].wait()
    assert lims["mutate"].wait() == pytest.approx(1.0)
    assert lims["read"].wait() == pytest.approx(1.0)
    # Recovery: a twentieth of the base per quiet period (the waits
    # took one).
    assert clock.now - cut == pytest.approx(2.0)
    assert lims["mutate"].current_rate == 1.1
    clock.now += 2.0
    assert lims["mutate"].current_rate == 1.2
    # Back at the base, each member has its own ceiling again.
    clock.now += 100.0
    assert lims["read"].current_rate == 20.0
    assert not lims["read"].group.slowed


def test_slowed_members_queue_together():
    """While slowed, a caller of one member waits behind a caller of
    another that sleeps for its turn (as on one limiter), so a busy
    member cannot take every other turn; before, it would not."""
    clock = FakeClock()
    in_sleep, release = threading.Event(), threading.Event()

    def sleep(seconds):
        if threading.current_thread().name == "mutate-caller":
            in_sleep.set()
            release.wait(10)
        clock.sleep(seconds)

    group = AdaptiveRateGroup("test", 2.0, clock=clock)
    mutate = group.limiter("mutate", 2.0, sleep=sleep)
    read = group.limiter("read", 20.0, sleep=clock.sleep)
    for slowed in (False, True):
        if slowed:
            group.throttled()
        mutate.wait()  # the next mutate call has to sleep for its turn
        caller = threading.Thread(target=mutate.wait, name="mutate-caller")
        caller.start()
        assert in_sleep.wait(10)
        done = threading.Event()
        reader = threading.Thread(target=lambda: (read.wait(), done.set()))
        reader.start()
        # Unslowed, the read goes at once; slowed, it queues behind.
        assert done.wait(0.5 if slowed else 10) is not slowed
        release.set()
        caller.join(10)
        reader.join(10)
        assert done.is_set()
        in_sleep.clear()
        release.clear()


def test_retry_after_holds_every_member():
    clock, lims = group_of(mutate=2.0, read=20.0)
    lims["read"].wait()
    lims["mutate"].throttled(retry_after=3.0)
    assert lims["read"].wait() == pytest.approx(3.0)
    # Then the group's spacing at its cut rate (1/s).
    assert lims["mutate"].wait() == pytest.approx(1.0)


def test_group_floor():
    clock, lims = group_of(mutate=1.0, read=20.0)
    for _ in range(20):
        lims["read"].throttled()
    # A twentieth of the base, but at least 0.1/s, for every member.
    assert lims["read"].current_rate == 0.1
    assert lims["mutate"].current_rate == 0.1


def test_bad_decrease():
    with pytest.raises(ValueError):
        AdaptiveRateLimiter("test", 1.0, decrease=1.0)


def test_threads_share_one_state():
    # Many threads reporting throttles and waiting at once: every report
    # is counted, the rate never leaves [floor, ceiling], and the cuts
    # add up to what one thread reporting them all would get.
    lock = threading.Lock()
    clock = FakeClock()

    def sleep(seconds):
        with lock:
            clock.now += seconds

    lim = AdaptiveRateLimiter("test", 64.0, cut_gap=0.0, floor=1.0,
                              quiet=1e9, clock=clock, sleep=sleep)
    seen = []

    def work():
        for _ in range(50):
            lim.wait()
            lim.throttled()
            seen.append(lim.current_rate)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert lim.throttle_count == 400
    assert all(1.0 <= rate <= 64.0 for rate in seen)
    assert lim.current_rate == 1.0
