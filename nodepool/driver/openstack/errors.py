# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Classification of OpenStack API errors, and waiting out throttling.

openstacksdk raises ``HttpException`` subclasses carrying the HTTP status
and keystoneauth ``ConnectionError`` subclasses for connections that
failed, dropped or timed out.  What they mean to the launcher:

* quota ("Quota exceeded" from Nova, Neutron's port limit): the node is
  aborted and the pool pauses;
* 404: the resource is gone (a delete is done);
* 429: the cloud's rate limiter refused the call; it was not carried out,
  so it is sent again after the ``Retry-After`` the cloud asked for
  (:class:`ThrottleRetrier`), a few times;
* 5xx and connection failures: transient, and for a create the outcome is
  unknown (the server may exist), which the create machine looks into;
* anything else: a failed launch attempt.

The SDK's own retries stay off: without ``status_code_retries`` it
retries nothing, and with them it would not log or respect our limiters.
"""

import logging
import time
from typing import Callable, Optional

from nodepool.driver.errors import ErrorClass

# Longest wait a Retry-After may impose on one call; a cloud asking for
# more gets the call failed (the launcher retries the launch later).
MAX_RETRY_AFTER = 30.0


def http_status(error: BaseException) -> Optional[int]:
    return getattr(error, "status_code", None)


def is_quota_message(message: str) -> bool:
    text = (message or "").lower()
    return "quota exceeded" in text or "number of ports exceeded" in text


def _connection_failed(error: BaseException) -> bool:
    try:
        from keystoneauth1 import exceptions as ksa
    except ImportError:  # pragma: no cover - keystoneauth is a dependency
        return False
    return isinstance(error, ksa.ConnectionError)


def classify(error: BaseException) -> ErrorClass:
    """The class of an exception raised by an openstacksdk call."""
    if is_quota_message(str(error)):
        return ErrorClass.QUOTA
    status = http_status(error)
    if status == 404:
        return ErrorClass.NOT_FOUND
    if status == 429:
        return ErrorClass.THROTTLE
    if (status is not None and status >= 500) or _connection_failed(error):
        return ErrorClass.SERVER
    return ErrorClass.OTHER


def retry_after(error: BaseException, default: float) -> float:
    """Seconds the cloud asked us to wait (``Retry-After`` in seconds),
    else ``default``."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        return max(0.0, float(headers.get("Retry-After")))
    except (TypeError, ValueError):
        return default


class ThrottleRetrier:
    """Sends a throttled (429) call again after the cloud's Retry-After.

    Other errors propagate unchanged.  ``sleep`` is injectable for tests;
    it runs in the worker or listing thread that made the call, never in
    a state machine.
    """

    def __init__(self, log: logging.Logger, tries: int = 6,
                 base_delay: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.log = log
        self.tries = tries
        self.base_delay = base_delay
        self.sleep = sleep

    def call(self, what: str, func: Callable, *args, **kwargs):
        attempt = 0
        while True:
            attempt += 1
            try:
                return func(*args, **kwargs)
            except Exception as e:
                if classify(e) is not ErrorClass.THROTTLE:
                    raise
                delay = retry_after(e, self.base_delay * attempt)
                if attempt >= self.tries or delay > MAX_RETRY_AFTER:
                    self.log.warning("%s: throttled, giving up after %d "
                                     "attempts", what, attempt)
                    raise
                self.log.info("%s: throttled, retrying in %.1fs", what,
                              delay)
                self.sleep(delay)
