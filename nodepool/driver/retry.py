# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Retrying cloud API calls that were throttled or failed transiently.

One :class:`Retrier` serves every cloud driver; a driver configures it
with its error classifier, how many tries each error class gets and how
long to wait between them (see ``make_retrier`` in the drivers' ``errors``
modules).

A call is given as a function that waits on the provider's rate limiter
and then makes the call, so every try, the retries included, goes through
the limiter.  Each throttling answer is reported to that limiter
(:meth:`~nodepool.driver.ratelimit.RateLimiter.throttled`).  A fixed
limiter ignores the report and the retrier sleeps its own backoff, as it
always did; an adaptive limiter slows down (and holds every call for a
``Retry-After``), so the retrier does not sleep on top of it.
"""

import logging
import time
from typing import Callable, Optional

from nodepool.driver.errors import ErrorClass


def _no_delay(attempt: int) -> float:
    return 0.0


def _no_retry_after(error: BaseException) -> Optional[float]:
    return None


class Retrier:
    """Runs a call, retrying throttled and (optionally) server errors.

    :param classify: maps an exception to an :class:`ErrorClass`.
    :param throttle_tries: tries in all for a throttled call.
    :param server_tries: tries in all for a server error; 0 lets server
        errors propagate at once, without a log line.
    :param throttle_delay: seconds to sleep before retry ``attempt + 1``
        of a throttled call, when the cloud gave no Retry-After.
    :param server_delay: the same for server errors.
    :param retry_after: the seconds a throttling answer asked for, or
        None.
    :param max_retry_after: a longer Retry-After fails the call at once.
    :param describe: the short form of an error for log lines.
    """

    def __init__(self, log: logging.Logger,
                 classify: Callable[[BaseException], ErrorClass], *,
                 throttle_tries: int = 6, server_tries: int = 0,
                 throttle_delay: Callable[[int], float] = _no_delay,
                 server_delay: Callable[[int], float] = _no_delay,
                 retry_after: Callable[[BaseException], Optional[float]] = (
                     _no_retry_after),
                 max_retry_after: Optional[float] = None,
                 describe: Callable[[BaseException], str] = str,
                 sleep: Callable[[float], None] = time.sleep):
        self.log = log
        self.classify = classify
        self.throttle_tries = throttle_tries
        self.server_tries = server_tries
        self.throttle_delay = throttle_delay
        self.server_delay = server_delay
        self.retry_after = retry_after
        self.max_retry_after = max_retry_after
        self.describe = describe
        self.sleep = sleep

    def call(self, what: str, func: Callable, *args, limiter=None,
             **kwargs):
        """``func(*args, **kwargs)`` with retries; ``what`` is logged.

        ``limiter`` is the rate limiter ``func`` waits on; throttling
        answers are reported to it.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return func(*args, **kwargs)
            except Exception as e:
                kind = self.classify(e)
                if kind is ErrorClass.THROTTLE:
                    self._throttled(what, e, attempt, limiter)
                elif kind is ErrorClass.SERVER and self.server_tries:
                    self._server_error(what, e, attempt)
                else:
                    raise

    def _throttled(self, what: str, error: Exception, attempt: int,
                   limiter) -> None:
        # Returns when the call may be tried again; raises ``error`` when
        # it should not.
        asked = self.retry_after(error)
        too_long = (asked is not None and self.max_retry_after is not None
                    and asked > self.max_retry_after)
        if attempt >= self.throttle_tries or too_long:
            self.log.warning("%s: throttled, giving up after %d attempts "
                             "(%s)", what, attempt, self.describe(error))
            raise error
        if limiter is not None:
            limiter.throttled(asked)
        if limiter is not None and limiter.adaptive:
            self.log.info("%s: throttled (%s), retrying at %s calls/s",
                          what, self.describe(error),
                          _rate_text(limiter.current_rate))
            return
        delay = asked if asked is not None else self.throttle_delay(attempt)
        self.log.info("%s: throttled (%s), retrying in %.1fs", what,
                      self.describe(error), delay)
        self.sleep(delay)

    def _server_error(self, what: str, error: Exception,
                      attempt: int) -> None:
        if attempt >= self.server_tries:
            self.log.warning("%s: giving up after %d attempts (%s)",
                             what, attempt, self.describe(error))
            raise error
        delay = self.server_delay(attempt)
        self.log.info("%s: server error (%s), retrying in %.1fs", what,
                      self.describe(error), delay)
        self.sleep(delay)


def _rate_text(rate: Optional[float]) -> str:
    return "unlimited" if rate is None else "%.2f" % rate
