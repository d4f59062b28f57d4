# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Client-side rate limiting of cloud API calls.

Cloud APIs throttle (or ban) clients that exceed a request rate, so every
adapter funnels its API calls through a :class:`RateLimiter`.  The limiter
spaces the *starts* of calls: a call's own duration does not count, which
matters because some calls (an AWS instance create, for example) take longer
than the allowed interval and are issued from several threads at once.
"""

import threading
import time
from typing import Callable, Optional

# How much one call moves the average latency (RateLimiter.latency).
LATENCY_WEIGHT = 0.2


class RateLimiter:
    """Space calls so that at most ``rate`` of them start per second.

    ``rate`` is in requests per second; ``0`` or ``None`` disables limiting.
    Each entry waits until ``1 / rate`` seconds have passed since the start
    recorded by the previous entry, then records its own start.  The very
    first entry never waits, but its start is recorded, so the second entry
    made right after it does wait.

    Thread-safe: one lock is held while an entry waits, so concurrent
    callers are admitted one at a time and never in a burst.  Use it as a
    context manager (``with limiter: ...``), through :meth:`limited` to also
    log the call's duration, or call :meth:`wait` directly.

    ``clock`` and ``sleep`` exist for tests; they default to
    :func:`time.monotonic` and :func:`time.sleep`.
    """

    def __init__(self, name: str, rate: Optional[float], *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate is not None and rate < 0:
            raise ValueError("rate must be >= 0 or None, not %r" % (rate,))
        self.name = name
        self.rate = rate
        self.delta = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._last_start: Optional[float] = None
        self._throttles = 0
        self._count_lock = threading.Lock()
        self._latency: Optional[float] = None

    def wait(self) -> float:
        """Block until a call may start; return the seconds spent waiting.

        The returned delay includes any time spent queued behind other
        threads, not only the final sleep.
        """
        if not self.delta:
            return 0.0
        entered = self._clock()
        with self._lock:
            now = self._clock()
            if self._last_start is not None:
                allowed = self._last_start + self.delta
                # Loop rather than trust one sleep: the clock is re-read so
                # that an early wake-up can never let a call start too soon.
                while now < allowed:
                    self._sleep(allowed - now)
                    now = self._clock()
            # Recorded on every entry, including the first one.
            self._last_start = now
        return now - entered

    @property
    def adaptive(self) -> bool:
        """Whether throttling answers change this limiter's rate."""
        return False

    @property
    def current_rate(self) -> Optional[float]:
        """Calls per second allowed now (None: unlimited)."""
        return self.rate or None

    @property
    def throttle_count(self) -> int:
        """Throttling answers reported so far (see :meth:`throttled`)."""
        return self._throttles

    def record_latency(self, seconds: float) -> None:
        """One call (waited for here) took ``seconds``; kept as a moving
        average (:meth:`limited` records every call it logs)."""
        with self._count_lock:
            if self._latency is None:
                self._latency = seconds
            else:
                self._latency += LATENCY_WEIGHT * (seconds - self._latency)

    @property
    def latency(self) -> Optional[float]:
        """The calls' average duration in seconds; None before the first
        recorded call."""
        return self._latency

    def concurrency(self) -> Optional[float]:
        """How many calls are in flight when calls start at the current
        rate and take :attr:`latency` each: the threads needed to keep
        this limiter busy.  None while unknown (no call measured, or no
        rate)."""
        rate, latency = self.current_rate, self._latency
        if not rate or latency is None:
            return None
        return rate * latency

    def throttled(self, retry_after: Optional[float] = None) -> None:
        """Told that the cloud refused a call for its rate; a fixed
        limiter only counts it (the retrier backs off on its own)."""
        with self._count_lock:
            self._throttles += 1

    def status(self) -> dict:
        """The limiter as the web app shows it: ``rate`` (calls per
        second now, None when unlimited), ``ceiling`` (the configured
        rate), ``adaptive`` and ``throttles`` (answers reported)."""
        return dict(rate=self.current_rate, ceiling=self.rate or None,
                    adaptive=self.adaptive, throttles=self.throttle_count)

    def __enter__(self) -> "RateLimiter":
        self.wait()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        return None

    def limited(self, log_fn: Callable[[str], object],
                msg: str) -> "_LoggedCall":
        """A context that waits for the limiter and logs the call on exit.

        On exit (also when the block raises) ``log_fn`` is called with
        ``"<msg> in <call secs>s after <delay secs>s delay"``.  Each use
        needs a new context; the limiter itself may be shared freely.
        """
        return _LoggedCall(self, log_fn, msg)

    def __repr__(self) -> str:
        return "<RateLimiter %s rate=%r>" % (self.name, self.rate)


class _LoggedCall:
    """One rate-limited call that reports its delay and duration."""

    def __init__(self, limiter: RateLimiter, log_fn: Callable[[str], object],
                 msg: str):
        self._limiter = limiter
        self._log_fn = log_fn
        self._msg = msg
        self.delay: Optional[float] = None
        self._start: Optional[float] = None

    def __enter__(self) -> "_LoggedCall":
        self.delay = self._limiter.wait()
        self._start = self._limiter._clock()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        duration = self._limiter._clock() - self._start
        self._limiter.record_latency(duration)
        self._log_fn("%s in %.3fs after %.3fs delay" % (
            self._msg, duration, self.delay))
        return None


class AdaptiveRateGroup:
    """The adaptive rate that the limiters of one account share.

    A cloud counts the calls of an account against its limit, but the
    calls differ in weight (AWS allows ten describe calls for one
    create), so each kind of call keeps a limiter with a ceiling of its
    own.  While the cloud does not throttle, each kind runs at its
    ceiling and the group changes nothing.  The group's own rate starts
    at ``base`` (calls per second; the provider's ``rate``).  Each
    :meth:`throttled` report cuts it to ``decrease`` times itself (never
    below ``floor``), unless it answers a call that started before the
    last cut: that call was sent at the old rate, which has been cut for
    it already.  (The group knows a call's start when the thread
    reporting the throttle waited on a member for the call; for a report
    from elsewhere, reports within ``cut_gap`` seconds of the last cut
    count once.)  Every ``quiet`` seconds without a report the rate grows
    by ``increase`` until it is back at ``base``.  While it is below,
    every call of every member takes a turn at that rate, in addition to
    its member's own spacing: the account as a whole is slowed down.  A
    ``Retry-After`` given with a report holds back every call of every
    member until it has passed.

    Defaults: ``floor`` is a twentieth of ``base`` but at least 0.1/s (or
    ``base``, if lower); ``increase`` is a twentieth of ``base``.  Without
    a base (None or 0) only Retry-After holds apply.  Thread-safe; make
    members with :meth:`limiter`.
    """

    def __init__(self, name: str, base: Optional[float], *,
                 decrease: float = 0.5, floor: Optional[float] = None,
                 increase: Optional[float] = None, quiet: float = 1.0,
                 cut_gap: float = 0.0,
                 clock: Callable[[], float] = time.monotonic):
        if not 0 < decrease < 1:
            raise ValueError("decrease must be in (0, 1), not %r" % (
                decrease,))
        base = base or None
        if base and floor is None:
            floor = min(base, max(0.1, base / 20.0))
        if base and increase is None:
            increase = base / 20.0
        self.name = name
        self.base = base
        self.floor = floor
        self.increase = increase
        self.decrease = decrease
        self.quiet = quiet
        self.cut_gap = cut_gap
        self.clock = clock
        self._lock = threading.Lock()
        #: What the members' callers queue on while the group is slowed.
        self.turn_lock = threading.Lock()
        self._rate = base
        self._changed: Optional[float] = None
        self._last_cut: Optional[float] = None
        self._last_turn: Optional[float] = None
        self.hold_until: Optional[float] = None
        self.throttle_count = 0
        # The start of the last call each thread waited for.
        self._starts = threading.local()

    def limiter(self, name: str, ceiling: Optional[float], *,
                sleep: Callable[[float], None] = time.sleep
                ) -> "AdaptiveRateLimiter":
        """A member limiter with its own ceiling (calls per second)."""
        return AdaptiveRateLimiter(name, ceiling, group=self, sleep=sleep)

    @property
    def rate(self) -> Optional[float]:
        """The group's rate now; None without a base."""
        now = self.clock()
        with self._lock:
            self._recover(now)
            return self._rate

    @property
    def slowed(self) -> bool:
        """Whether throttling holds the group below its base."""
        rate = self.rate
        return rate is not None and rate < self.base

    def turn(self, earliest: float) -> float:
        """Book the next call's start: ``earliest`` (the member's own
        spacing), later if a hold or, while slowed, the group's spacing
        says so.  The caller starts its call then, and only then."""
        now = self.clock()
        with self._lock:
            self._recover(now)
            start = earliest
            if self.hold_until is not None:
                start = max(start, self.hold_until)
            last = self._last_turn
            if last is not None and self._rate is not None and \
                    self._rate < self.base:
                start = max(start, last + 1.0 / self._rate)
            self._last_turn = start if last is None else max(last, start)
            return start

    def started(self, when: float) -> None:
        """The calling thread's call starts at ``when``."""
        self._starts.last = when

    def _recover(self, now: float) -> None:
        # Called with the lock held: one additive step per quiet period
        # since the last change.
        if self._rate is None or self._changed is None:
            return
        if self._rate >= self.base:
            self._changed = None
            return
        steps = int((now - self._changed) / self.quiet)
        if steps > 0:
            # Rounded: additive float steps must land on the rates they
            # name (14.0, not 14.000000000000002).
            self._rate = round(min(self.base,
                                   self._rate + steps * self.increase), 9)
            self._changed += steps * self.quiet

    def throttled(self, retry_after: Optional[float] = None) -> None:
        """Report a throttling answer (``retry_after``: the seconds the
        cloud asked for, if it did)."""
        now = self.clock()
        with self._lock:
            self.throttle_count += 1
            if retry_after and retry_after > 0:
                hold = now + retry_after
                if self.hold_until is None or hold > self.hold_until:
                    self.hold_until = hold
            if self._rate is None:
                return
            self._recover(now)
            started = getattr(self._starts, "last", None)
            if self._last_cut is None:
                cut = True
            elif started is not None:
                cut = started > self._last_cut
            else:
                cut = now - self._last_cut >= self.cut_gap
            if cut:
                self._rate = max(self.floor, self._rate * self.decrease)
                self._last_cut = now
            # Any throttle starts the quiet period over (once its hold,
            # if any, is over).
            self._changed = max(now, self.hold_until or now)

    def __repr__(self) -> str:
        return "<AdaptiveRateGroup %s base=%r>" % (self.name, self.base)


class AdaptiveRateLimiter(RateLimiter):
    """A :class:`RateLimiter` that slows down when the cloud throttles.

    ``rate`` is the ceiling of this kind of call; the rate allowed now is
    the ceiling, or the rate of its :class:`AdaptiveRateGroup` while
    throttling holds that lower.  A limiter made without a ``group`` has
    a group of its own with the ceiling as its base, made from the
    keyword arguments (see the group).  Without a ceiling (``rate`` 0 or
    None) this kind of call is not limited: only Retry-After holds apply.
    """

    def __init__(self, name: str, rate: Optional[float], *,
                 group: Optional[AdaptiveRateGroup] = None,
                 decrease: float = 0.5, floor: Optional[float] = None,
                 increase: Optional[float] = None, quiet: float = 1.0,
                 cut_gap: float = 0.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if group is None:
            group = AdaptiveRateGroup(
                name, rate, decrease=decrease, floor=floor,
                increase=increase, quiet=quiet, cut_gap=cut_gap,
                clock=clock)
        super().__init__(name, rate, clock=group.clock, sleep=sleep)
        self.group = group
        self.ceiling = rate or None

    @property
    def adaptive(self) -> bool:
        return True

    @property
    def throttle_count(self) -> int:
        """Throttling answers reported to the group, by any member."""
        return self.group.throttle_count

    @property
    def current_rate(self) -> Optional[float]:
        if self.ceiling is None:
            return None
        group = self.group.rate
        if group is None or group >= self.group.base:
            return self.ceiling
        return min(self.ceiling, group)

    def wait(self) -> float:
        entered = self._clock()
        # While the group is slowed, callers of every member queue for
        # their turns on one lock, as on a single limiter: each thread
        # waiting gets its share of the turns, whatever kind of call it
        # makes.  (On its own lock, one member with a single busy thread,
        # such as a listing, would get every other turn.)
        lock = self.group.turn_lock if self.group.slowed else self._lock
        with lock:
            now = self._clock()
            earliest = now
            if self._last_start is not None and self.delta:
                earliest = max(now, self._last_start + self.delta)
            start = self.group.turn(earliest)
            # Loop rather than trust one sleep: the clock is re-read so
            # that an early wake-up can never let a call start too soon.
            while now < start:
                self._sleep(start - now)
                now = self._clock()
            self._last_start = now
            self.group.started(now)
        return now - entered

    def throttled(self, retry_after: Optional[float] = None) -> None:
        """Report a throttling answer to the group (``retry_after``: the
        seconds the cloud asked for, if it did)."""
        self.group.throttled(retry_after)

    def __repr__(self) -> str:
        return "<AdaptiveRateLimiter %s ceiling=%r>" % (
            self.name, self.ceiling)


def provider_limiters(prefix: str, name: str, rates: dict,
                      adaptive: bool) -> dict:
    """The rate limiters of provider ``name`` of a driver (``prefix``).

    ``rates`` maps the short names of the limiters an adapter uses
    (``mutate``, ``compute``...) to their rates (calls per second).  Each
    is a limiter named ``<prefix>-<short name>-<name>`` at that rate.
    Adaptive (``adaptive-rate``, the default): the rates are ceilings and
    the limiters are members of one :class:`AdaptiveRateGroup` whose base
    is the lowest of them, since a cloud's throttling counts every call
    of the account; fixed: plain :class:`RateLimiter` objects.
    """
    group = None
    if adaptive:
        limited = [value for value in rates.values() if value]
        group = AdaptiveRateGroup("%s-%s" % (prefix, name),
                                  min(limited) if limited else None)
    limiters = {}
    for key, value in rates.items():
        limiter_name = "%s-%s-%s" % (prefix, key, name)
        limiters[key] = group.limiter(limiter_name, value) if group \
            else RateLimiter(limiter_name, value)
    return limiters


def make_limiter(name: str, rate: Optional[float],
                 adaptive: bool) -> RateLimiter:
    """The one limiter of a provider whose calls all share a rate."""
    if adaptive:
        return AdaptiveRateLimiter(name, rate)
    return RateLimiter(name, rate)
