# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Classification of IBM Cloud API errors.

The SDKs raise ``ibm_cloud_sdk_core.ApiException`` with the HTTP status
(``code``) and the first message of the answer; the VPC API's answer body
is ``{"errors": [{"code", "message", "more_info"}], "trace"}`` and the
error code decides what the launcher sees:

* 429: throttling, retried by the adapter, then :class:`IbmApiError`;
* 5xx and lost connections: server errors (:class:`IbmApiError`);
* a code or message naming a quota: :class:`QuotaException`;
* a code naming capacity: :class:`CapacityException`;
* 404 or a ``*not_found`` code: :class:`NotFound` (a delete is done);
* anything else: a failed launch attempt.

An instance that was accepted but could not start ends ``failed`` with
``status_reasons`` codes (``cannot_start_capacity``,
``cannot_start_compute``...), classified the same way.
"""

import re
from typing import Optional

import requests

from nodepool.driver.errors import CloudApiError, ErrorClass, exception_for

_QUOTA = re.compile(r"quota", re.IGNORECASE)
_CAPACITY = re.compile(r"capacity", re.IGNORECASE)


class IbmApiError(CloudApiError):
    """IBM Cloud kept throttling or failing after the retries."""


def error_code(error: BaseException) -> Optional[str]:
    """The VPC error code of an ``ApiException`` (None when the body has
    none)."""
    response = getattr(error, "http_response", None)
    if response is None:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors and isinstance(errors[0], dict):
        return errors[0].get("code")
    return None


def classify_code(code: Optional[str], message: str = "",
                  status: Optional[int] = None) -> ErrorClass:
    """The class of an error code (with its message and status)."""
    code = code or ""
    if status == 429:
        return ErrorClass.THROTTLE
    if status is not None and status >= 500:
        return ErrorClass.SERVER
    if _QUOTA.search(code) or _QUOTA.search(message or ""):
        return ErrorClass.QUOTA
    if _CAPACITY.search(code):
        return ErrorClass.CAPACITY
    if status == 404 or code.endswith("not_found"):
        return ErrorClass.NOT_FOUND
    return ErrorClass.OTHER


def classify(error: BaseException) -> ErrorClass:
    """The class of an exception raised by an IBM SDK call."""
    if isinstance(error, (requests.ConnectionError, requests.Timeout)):
        return ErrorClass.SERVER
    status = getattr(error, "status_code", None)
    if status is None and hasattr(error, "http_response"):
        # Older ibm-cloud-sdk-core releases only name it ``code``.
        status = getattr(error, "code", None)
    if not isinstance(status, int):
        return ErrorClass.OTHER
    return classify_code(error_code(error), getattr(error, "message", "")
                         or str(error), status)


def retry_after(error: BaseException) -> Optional[float]:
    """The seconds a throttling answer's ``Retry-After`` asks for."""
    response = getattr(error, "http_response", None)
    value = response.headers.get("Retry-After") if response is not None \
        else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def translate(error: BaseException, what: str,
              creating: bool = False) -> BaseException:
    """The nodepool exception the launcher should see for ``error``."""
    code = error_code(error)
    message = getattr(error, "message", None) or str(error)
    text = "%s: %s%s" % (what, "%s: " % code if code else "", message)
    return exception_for(classify(error), text, creating, IbmApiError)


def start_failure(what: str, reasons: list) -> BaseException:
    """The exception for an instance that ended ``failed``, from its
    ``status_reasons``."""
    for reason in reasons or ():
        code = reason.get("code") or ""
        message = reason.get("message") or ""
        return exception_for(classify_code(code, message),
                             "%s failed: %s: %s" % (what, code, message),
                             True, IbmApiError)
    return exception_for(ErrorClass.OTHER, "%s failed" % what, True,
                         IbmApiError)
