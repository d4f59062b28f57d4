# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Classification of AWS API errors and the retry wrapper around calls.

EC2 errors fall into a few classes that call for different reactions:

* throttling (``RequestLimitExceeded``): we went over the account's API
  rate; back off and try the same call again, it will succeed;
* server errors (HTTP 5xx, ``InternalError``, ``Unavailable``): transient;
  retried a few times, then the launch attempt fails and the launcher's
  own retry (``launch-retries``) takes over;
* capacity (``InsufficientInstanceCapacity``...): AWS has no such
  instance right now; the attempt fails with :class:`CapacityException`;
* quota (``InstanceLimitExceeded``, ``VcpuLimitExceeded``...): the node is
  aborted and the pool pauses (:class:`QuotaException`);
* not found: the resource is gone (:class:`NotFound`).

Everything else is a plain launch failure.
"""

import logging
import time
from typing import Callable, Optional

from nodepool.driver.errors import CloudApiError, ErrorClass, exception_for
from nodepool.driver.retry import Retrier


THROTTLE_CODES = frozenset((
    "RequestLimitExceeded", "Throttling", "ThrottlingException",
    "TooManyRequestsException", "RequestThrottled",
    "RequestThrottledException", "SlowDown"))
SERVER_CODES = frozenset((
    "InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable",
    "ServerInternal", "InternalServerError"))
CAPACITY_CODES = frozenset((
    "InsufficientInstanceCapacity", "InsufficientHostCapacity",
    "InsufficientCapacity", "InsufficientAddressCapacity",
    "InsufficientReservedInstanceCapacity", "InsufficientCapacityOnHost",
    "SpotMaxPriceTooLow", "UnfulfillableCapacity"))
QUOTA_CODES = frozenset((
    "InstanceLimitExceeded", "VcpuLimitExceeded", "VolumeLimitExceeded",
    "HostLimitExceeded", "MaxSpotInstanceCountExceeded",
    "ResourceLimitExceeded", "AddressLimitExceeded",
    "InsufficientFreeAddressesInSubnet"))


def error_code(error: BaseException) -> Optional[str]:
    """The AWS error code of a botocore ``ClientError`` (else None)."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return None
    return response.get("Error", {}).get("Code")


def http_status(error: BaseException) -> Optional[int]:
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return None
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def classify(error: BaseException) -> ErrorClass:
    """Which class an exception raised by a boto3 call belongs to."""
    code = error_code(error)
    if code is None:
        # Connection resets and read timeouts (botocore raises them as
        # non-ClientError exceptions) are as transient as a 503.
        name = type(error).__name__
        if name in ("EndpointConnectionError", "ConnectionClosedError",
                    "ReadTimeoutError", "ConnectTimeoutError"):
            return ErrorClass.SERVER
        return ErrorClass.OTHER
    if code in THROTTLE_CODES:
        return ErrorClass.THROTTLE
    if code in CAPACITY_CODES:
        return ErrorClass.CAPACITY
    if code in QUOTA_CODES:
        return ErrorClass.QUOTA
    if code.endswith(".NotFound") or code.endswith("NotFoundException") \
            or code in ("NoSuchKey", "NoSuchEntity"):
        return ErrorClass.NOT_FOUND
    status = http_status(error) or 0
    if code in SERVER_CODES or status >= 500:
        return ErrorClass.SERVER
    if 400 <= status < 500:
        return ErrorClass.BAD_REQUEST
    return ErrorClass.OTHER


def translate(error: BaseException, what: str,
              creating: bool = False) -> BaseException:
    """The nodepool exception the launcher should see for ``error``.

    ``what`` describes the call ("creating instance for node 42") and
    prefixes the message.  When ``creating``, a missing resource (an
    unknown instance profile or subnet) is a failed launch, not the
    "already gone" that NotFound means to a delete.
    """
    # Throttling and server errors are only seen here once the call's
    # own retries are used up: AwsApiError.
    return exception_for(classify(error), "%s: %s" % (what, error),
                         creating, AwsApiError)


class AwsApiError(CloudApiError):
    """AWS kept failing (throttling or server errors) after retries."""


def make_retrier(log: logging.Logger, throttle_tries: int = 6,
                 server_tries: int = 3, base_delay: float = 0.5,
                 max_delay: float = 20.0,
                 sleep: Callable[[float], None] = time.sleep) -> Retrier:
    """The shared retrier, set up for AWS.

    Throttling backs off exponentially when the limiter is fixed (AWS
    refills the request token bucket at a fixed rate, so hammering only
    extends the penalty); server errors are retried quickly a few times.
    Other errors propagate unchanged.
    """
    def describe(error: BaseException) -> str:
        return error_code(error) or str(error)

    return Retrier(
        log, classify, throttle_tries=throttle_tries,
        server_tries=server_tries,
        throttle_delay=lambda attempt: min(max_delay,
                                           base_delay * 2 ** attempt),
        server_delay=lambda attempt: min(max_delay, base_delay * attempt),
        describe=describe, sleep=sleep)
