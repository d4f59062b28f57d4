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
        #: Throttling answers reported so far (see :meth:`throttled`).
        self.throttle_count = 0
        self._count_lock = threading.Lock()

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
                allowed = self._allowed(now)
                # Loop rather than trust one sleep: the clock is re-read so
                # that an early wake-up can never let a call start too soon.
                while now < allowed:
                    self._sleep(allowed - now)
                    now = self._clock()
                    allowed = self._allowed(now)
            # Recorded on every entry, including the first one.
            self._record_start(now)
        return now - entered

    def _record_start(self, now: float) -> None:
        # Called with the lock held.
        self._last_start = now

    def _allowed(self, now: float) -> float:
        """When the next call may start (only asked once one started)."""
        return self._last_start + self.delta

    @property
    def adaptive(self) -> bool:
        """Whether throttling answers change this limiter's rate."""
        return False

    @property
    def current_rate(self) -> Optional[float]:
        """Calls per second allowed now (None: unlimited)."""
        return self.rate or None

    def throttled(self, retry_after: Optional[float] = None) -> None:
        """Told that the cloud refused a call for its rate; a fixed
        limiter only counts it (the retrier backs off on its own)."""
        with self._count_lock:
            self.throttle_count += 1

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
        self._log_fn("%s in %.3fs after %.3fs delay" % (
            self._msg, duration, self.delay))
        return None


class AdaptiveRateLimiter(RateLimiter):
    """A :class:`RateLimiter` that slows down when the cloud throttles.

    ``rate`` is the ceiling.  Each :meth:`throttled` report cuts the
    current rate to ``decrease`` times itself (never below ``floor``),
    unless it answers a call that started before the last cut: that call
    was sent at the old rate, which has been cut for it already.  (The
    limiter knows a call's start when the thread reporting the throttle
    waited on it for the call; for a report from elsewhere, reports
    within ``cut_gap`` seconds of the last cut count once.)  Every
    ``quiet`` seconds without a report the rate grows by ``increase``
    until it is back at the ceiling.  A ``Retry-After`` given with a
    report holds back every call until it has passed.

    Defaults: ``floor`` is a twentieth of the ceiling but at least
    0.1/s (or the ceiling, if lower); ``increase`` is a twentieth of the
    ceiling.  Without a ceiling (``rate`` 0 or None) nothing is limited
    and only Retry-After holds apply.
    """

    def __init__(self, name: str, rate: Optional[float], *,
                 decrease: float = 0.5, floor: Optional[float] = None,
                 increase: Optional[float] = None, quiet: float = 1.0,
                 cut_gap: float = 0.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        super().__init__(name, rate, clock=clock, sleep=sleep)
        if not 0 < decrease < 1:
            raise ValueError("decrease must be in (0, 1), not %r" % (
                decrease,))
        ceiling = rate or None
        if floor is None and ceiling:
            floor = min(ceiling, max(0.1, ceiling / 20.0))
        if increase is None and ceiling:
            increase = ceiling / 20.0
        self.ceiling = ceiling
        self.floor = floor
        self.decrease = decrease
        self.increase = increase
        self.quiet = quiet
        self.cut_gap = cut_gap
        self._state = threading.Lock()
        self._rate = ceiling
        self._changed: Optional[float] = None
        self._last_cut: Optional[float] = None
        self._hold_until: Optional[float] = None
        # The start of the last call each thread waited for.
        self._starts = threading.local()

    @property
    def adaptive(self) -> bool:
        return True

    def _record_start(self, now: float) -> None:
        super()._record_start(now)
        self._starts.last = now

    @property
    def current_rate(self) -> Optional[float]:
        now = self._clock()
        with self._state:
            self._recover(now)
            return self._rate

    def _recover(self, now: float) -> None:
        # Called with self._state held: one additive step per quiet
        # period since the last change.
        if self._rate is None or self._changed is None:
            return
        if self._rate >= self.ceiling:
            self._changed = None
            return
        steps = int((now - self._changed) / self.quiet)
        if steps > 0:
            self._rate = min(self.ceiling,
                             self._rate + steps * self.increase)
            self._changed += steps * self.quiet

    def _allowed(self, now: float) -> float:
        with self._state:
            self._recover(now)
            allowed = self._last_start
            if self._rate:
                allowed += 1.0 / self._rate
            if self._hold_until is not None:
                allowed = max(allowed, self._hold_until)
            return allowed

    def wait(self) -> float:
        if self.ceiling:
            return super().wait()
        # Unlimited: only a Retry-After hold makes a call wait.
        entered = now = self._clock()
        while self._hold_until is not None and now < self._hold_until:
            self._sleep(self._hold_until - now)
            now = self._clock()
        return now - entered

    def throttled(self, retry_after: Optional[float] = None) -> None:
        """Report a throttling answer (``retry_after``: the seconds the
        cloud asked for, if it did)."""
        now = self._clock()
        with self._state:
            self.throttle_count += 1
            if retry_after and retry_after > 0:
                hold = now + retry_after
                if self._hold_until is None or hold > self._hold_until:
                    self._hold_until = hold
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
            self._changed = max(now, self._hold_until or now)

    def __repr__(self) -> str:
        return "<AdaptiveRateLimiter %s ceiling=%r>" % (
            self.name, self.ceiling)


def provider_limiters(prefix: str, name: str, rate: Optional[float],
                      rates: dict, adaptive: bool) -> dict:
    """The rate limiters of provider ``name`` of a driver (``prefix``).

    ``rates`` maps the short names of the limiters an adapter uses
    (``mutate``, ``compute``...) to their fixed rates.  Fixed
    (``adaptive-rate: false``): one :class:`RateLimiter` each, named
    ``<prefix>-<short name>-<name>``.  Adaptive: a single
    :class:`AdaptiveRateLimiter` with ``rate`` as its ceiling serves
    them all, since a cloud's limit counts every call of the account.
    """
    if adaptive:
        shared = AdaptiveRateLimiter("%s-%s" % (prefix, name), rate)
        return {key: shared for key in rates}
    return {key: RateLimiter("%s-%s-%s" % (prefix, key, name), value)
            for key, value in rates.items()}


def distinct(limiters: dict) -> dict:
    """``limiters`` for display: one shared limiter as ``{"api": it}``."""
    found = list({id(limiter): limiter
                  for limiter in limiters.values()}.values())
    if len(found) == 1 and len(limiters) > 1:
        return {"api": found[0]}
    return dict(limiters)


def make_limiter(name: str, rate: Optional[float],
                 adaptive: bool) -> RateLimiter:
    """The one limiter of a provider whose calls all share a rate."""
    if adaptive:
        return AdaptiveRateLimiter(name, rate)
    return RateLimiter(name, rate)
