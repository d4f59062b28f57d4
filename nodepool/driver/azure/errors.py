# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Classification of Azure Resource Manager errors.

ARM answers a refused request with an HTTP status and an error code
(``azure.core.exceptions.HttpResponseError.error.code``); a request that
was accepted but failed later leaves the resource ``Failed`` with the code
in the VM's instance view (``ProvisioningState/failed/<code>``).  Either
way the code decides what the launcher should see:

* quota (``OperationNotAllowed`` mentioning a quota, ``QuotaExceeded``,
  public IP count limits...): :class:`QuotaException`, the node is aborted
  and the pool pauses;
* capacity (``SkuNotAvailable``, ``AllocationFailed``...): Azure has no
  such machine now, :class:`CapacityException`;
* not found: :class:`NotFound` (a delete is done);
* anything else: a failed launch attempt.

Throttling (429) and server errors are retried by azure-core's retry
policy before they get here.
"""

import re
from typing import Optional

from nodepool import exceptions
from nodepool.driver.errors import CloudApiError, ErrorClass, exception_for


QUOTA_CODES = frozenset((
    "QuotaExceeded", "ResourceQuotaExceeded", "OperationNotAllowedQuota",
    "PublicIPCountLimitReached", "StandardSkuPublicIPCountLimitReached",
    "DynamicPublicIPCountLimitReached", "NetworkInterfaceCountLimitReached",
    "ResourceCountExceedsLimitDueToTemplate", "SubscriptionQuotaExceeded",
    "LowPriorityQuotaExceeded", "MaxCoresPerSubscriptionExceeded"))
CAPACITY_CODES = frozenset((
    "SkuNotAvailable", "AllocationFailed", "ZonalAllocationFailed",
    "OverconstrainedAllocationRequest",
    "OverconstrainedZonalAllocationRequest", "SpotVMEvictionRateTooHigh",
    "InsufficientCapacity", "AllocationFailedSpot"))
NOT_FOUND_CODES = frozenset((
    "ResourceNotFound", "NotFound", "ResourceGroupNotFound"))
THROTTLE_CODES = frozenset((
    "SubscriptionRequestsThrottled", "TooManyRequests",
    "OperationPreempted"))
_QUOTA_WORDS = re.compile(r"\bquota\b", re.IGNORECASE)


def error_code(error: BaseException) -> Optional[str]:
    """The ARM error code of an azure-core ``HttpResponseError``."""
    details = getattr(error, "error", None)
    code = getattr(details, "code", None)
    if code:
        return code
    return getattr(error, "code", None) or None


def classify_code(code: Optional[str], message: str = "",
                  status: Optional[int] = None) -> ErrorClass:
    """The class of an ARM error code (with its message and status)."""
    if code in QUOTA_CODES or (
            code in ("OperationNotAllowed", "BadRequest", "Conflict")
            and _QUOTA_WORDS.search(message or "")):
        return ErrorClass.QUOTA
    if code in CAPACITY_CODES:
        return ErrorClass.CAPACITY
    if code in NOT_FOUND_CODES or status == 404:
        return ErrorClass.NOT_FOUND
    if code in THROTTLE_CODES or status == 429:
        return ErrorClass.THROTTLE
    if status is not None and status >= 500:
        return ErrorClass.SERVER
    return ErrorClass.OTHER


def classify(error: BaseException) -> ErrorClass:
    """The class of an exception raised by an azure-mgmt call."""
    status = getattr(error, "status_code", None)
    details = getattr(error, "error", None)
    message = getattr(details, "message", None) or str(error)
    return classify_code(error_code(error), message, status)


def translate(error: BaseException, what: str,
              creating: bool = False) -> BaseException:
    """The nodepool exception the launcher should see for ``error``.

    When ``creating``, a missing resource (an unknown subnet or image) is a
    failed launch, not the "already gone" NotFound means to a delete.
    """
    details = getattr(error, "error", None)
    message = getattr(details, "message", None) or str(error)
    code = error_code(error)
    text = "%s: %s%s" % (what, "%s: " % code if code else "", message)
    return exception_for(classify(error), text, creating, AzureApiError)


def provisioning_failure(what: str, statuses: list) -> BaseException:
    """The exception for a resource that ended ``Failed``, from the
    ``statuses`` of its instance view (may be empty)."""
    for status in statuses or ():
        code = status.get("code") or ""
        if code.lower().startswith("provisioningstate/failed/"):
            reason = code.split("/", 2)[2]
            message = status.get("message") or status.get(
                "displayStatus") or ""
            return exception_for(
                classify_code(reason, message),
                "%s failed: %s: %s" % (what, reason, message), True,
                AzureApiError)
    return exceptions.LaunchStatusException("%s failed" % what)


class AzureApiError(CloudApiError):
    """Azure kept throttling or failing after the client's retries."""
