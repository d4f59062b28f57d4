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
