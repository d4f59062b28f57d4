# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Classification of Compute Engine API errors.

GCE refuses a call with an HTTP status and a body whose
``error.errors[].reason`` names the cause (google-api-core raises a
``GoogleAPICallError`` subclass carrying both); a call it accepted may
fail later, in its zone operation's ``error.errors[].code``.  Either way:

* quota (``quotaExceeded``, ``QUOTA_EXCEEDED``): :class:`QuotaException`,
  the node is aborted and the pool pauses;
* capacity (``ZONE_RESOURCE_POOL_EXHAUSTED`` and its variants): no such
  machine in the zone now, :class:`CapacityException`;
* throttling (429, ``rateLimitExceeded``): retried by the adapter's
  :class:`~nodepool.driver.retry.Retrier` after Retry-After, then a
  :class:`GceApiError`;
* not found (404): gone for a delete, a failed launch for a create;
* server errors (5xx, a dropped connection, a timeout): a
  :class:`GceApiError`, whose outcome is unknown for a create.
"""

import logging
import time
from typing import Callable, Optional

from nodepool.driver.errors import CloudApiError, ErrorClass, exception_for
from nodepool.driver.retry import Retrier

QUOTA = frozenset(("quotaExceeded", "QUOTA_EXCEEDED",
                   "REGION_QUOTA_EXCEEDED"))
CAPACITY = frozenset((
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    "RESOURCE_POOL_EXHAUSTED", "resourcePoolExhausted",
    "STOCKOUT"))
THROTTLE = frozenset(("rateLimitExceeded", "userRateLimitExceeded",
                      "RATE_LIMIT_EXCEEDED"))
NOT_FOUND = frozenset(("notFound", "RESOURCE_NOT_FOUND"))

# A Retry-After longer than this fails the call at once.
MAX_RETRY_AFTER = 60.0


class GceApiError(CloudApiError):
    """GCE kept throttling or failing after the retries."""


def reasons(error: BaseException) -> list:
    """The ``reason`` of every entry of a GoogleAPICallError's body."""
    found = [e.get("reason") for e in getattr(error, "errors", None) or ()
             if isinstance(e, dict)]
    reason = getattr(error, "reason", None)
    if reason:
        found.append(reason)
    return [r for r in found if r]


def classify_codes(codes, status: Optional[int] = None) -> ErrorClass:
    """The class of an error with these reasons/codes and HTTP status."""
    codes = set(codes)
    if codes & QUOTA:
        return ErrorClass.QUOTA
    if codes & CAPACITY:
        return ErrorClass.CAPACITY
    if codes & THROTTLE or status == 429:
        return ErrorClass.THROTTLE
    if codes & NOT_FOUND or status == 404:
        return ErrorClass.NOT_FOUND
    if status is not None and status >= 500:
        return ErrorClass.SERVER
    if status == 400:
        return ErrorClass.BAD_REQUEST
    return ErrorClass.OTHER


def _is_transport_error(error: BaseException) -> bool:
    # requests' ConnectionError and Timeout (the REST transport's), and
    # the standard library's, without importing requests here.
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"ConnectionError", "Timeout", "TimeoutError",
                         "RetryError"})


def classify(error: BaseException) -> ErrorClass:
    """The class of an exception raised by a compute_v1 client call."""
    status = getattr(error, "code", None)
    if not isinstance(status, int):
        status = None
    if status is None and _is_transport_error(error):
        return ErrorClass.SERVER
    return classify_codes(reasons(error), status)


def describe(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error)
    found = reasons(error)
    return "%s%s" % ("%s: " % found[0] if found else "", message)


def translate(error: BaseException, what: str,
              creating: bool = False) -> BaseException:
    """The nodepool exception the launcher should see for ``error``."""
    return exception_for(classify(error), "%s: %s" % (what, describe(error)),
                         creating, GceApiError)


def operation_error(what: str, operation: dict) -> BaseException:
    """The exception for a zone operation that ended with an error."""
    errors = (operation.get("error") or {}).get("errors") or []
    codes = [e.get("code") for e in errors if e.get("code")]
    message = "; ".join("%s: %s" % (e.get("code"), e.get("message"))
                        for e in errors) or "failed"
    status = operation.get("httpErrorStatusCode")
    kind = classify_codes(codes, None)
    text = "%s: %s" % (what, message)
    if kind is ErrorClass.OTHER and isinstance(status, int) and status >= 500:
        # The operation finished: its outcome is known, nothing was made.
        return GceApiError(text)
    return exception_for(kind, text, True, GceApiError)


def retry_after(error: BaseException) -> Optional[float]:
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or {}
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def make_retrier(log: logging.Logger, tries: int = 6,
                 base_delay: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep) -> Retrier:
    """A throttled call is sent again after GCE's Retry-After (else
    ``base_delay`` times the attempt), at most ``tries`` times in all;
    every try waits on the provider's rate limiter."""
    return Retrier(log, classify, throttle_tries=tries,
                   throttle_delay=lambda attempt: base_delay * attempt,
                   retry_after=retry_after, max_retry_after=MAX_RETRY_AFTER,
                   describe=describe, sleep=sleep)
