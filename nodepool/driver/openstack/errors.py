# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Classification of OpenStack API errors, and waiting out throttling.

openstacksdk raises ``HttpException`` subclasses carrying the HTTP status
and keystoneauth ``ConnectionError`` subclasses for connections that
failed, dropped or timed out.  What they mean to the launcher:

* quota ("Quota exceeded" from Nova, Neutron's port limit): the node is
  aborted and the pool pauses;
* a server that went to ERROR with "No valid host was found": a capacity
  failure (:class:`NoValidHost`);
* 404: the resource is gone (a delete is done);
* 429: the cloud's rate limiter refused the call; it was not carried out,
  so it is sent again after the ``Retry-After`` the cloud asked for
  (:func:`make_retrier`), a few times;
* 5xx and connection failures: transient, and for a create the outcome is
  unknown (the server may exist), which the create machine looks into;
* anything else: a failed launch attempt.

The SDK's own retries stay off: without ``status_code_retries`` it
retries nothing, and with them it would not log or respect our limiters.
"""

import logging
import time
from typing import Callable, Optional

from nodepool import exceptions
from nodepool.driver.errors import ErrorClass
from nodepool.driver.retry import Retrier

# Longest wait a Retry-After may impose on one call; a cloud asking for
# more gets the call failed (the launcher retries the launch later).
MAX_RETRY_AFTER = 30.0


def http_status(error: BaseException) -> Optional[int]:
    return getattr(error, "status_code", None)


def is_quota_message(message: str) -> bool:
    text = (message or "").lower()
    return "quota exceeded" in text or "number of ports exceeded" in text


def is_capacity_fault(message: str) -> bool:
    """Whether a server's fault says Nova found no host for it."""
    return "no valid host" in (message or "").lower()


class NoValidHost(exceptions.CapacityException):
    """Nova put the server in ERROR with "No valid host was found": no
    capacity for the flavor (in the zone).  The stat stays
    ``error.status``, that of any server in ERROR in nodepool 11."""

    statsd_key = "error.status"


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


def retry_after(error: BaseException,
                default: Optional[float]) -> Optional[float]:
    """Seconds the cloud asked us to wait (``Retry-After`` in seconds),
    else ``default``."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        return max(0.0, float(headers.get("Retry-After")))
    except (TypeError, ValueError):
        return default


def make_retrier(log: logging.Logger, tries: int = 6,
                 base_delay: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep) -> Retrier:
    """The shared retrier, set up for OpenStack: a throttled (429) call
    is sent again after the cloud's Retry-After (else ``base_delay``
    times the attempt), at most ``tries`` times in all.  Other errors
    propagate unchanged.  The sleep runs in the worker or listing thread
    that made the call, never in a state machine."""
    return Retrier(
        log, classify, throttle_tries=tries,
        throttle_delay=lambda attempt: base_delay * attempt,
        retry_after=lambda error: retry_after(error, None),
        max_retry_after=MAX_RETRY_AFTER, sleep=sleep)
