# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""What GCE's errors mean to the launcher: google-api-core exceptions
built from GCE's error bodies (as the REST client builds them), and zone
operations that ended with an error."""

import json

import pytest
import requests
from google.api_core import exceptions as gexc

from nodepool import exceptions
from nodepool.driver.errors import ErrorClass
from nodepool.driver.gce import errors
from tests.fakes.gce import GceError, quota_error, rate_limit_body


def api_error(status, body, headers=None):
    """The exception the REST client raises for this answer."""
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.headers.update(headers or {})
    response.request = requests.Request(
        "POST", "http://127.0.0.1/compute/v1/x").prepare()
    return gexc.from_http_response(response)


@pytest.mark.parametrize("status,body,kind", [
    (403, quota_error("CPUS", 24.0, "us-central1").body(), ErrorClass.QUOTA),
    (429, rate_limit_body(), ErrorClass.THROTTLE),
    (403, GceError(403, "rateLimitExceeded", "slow down").body(),
     ErrorClass.THROTTLE),
    (404, GceError(404, "notFound", "gone").body(), ErrorClass.NOT_FOUND),
    (503, GceError(503, "backendError", "oops").body(), ErrorClass.SERVER),
    (400, GceError(400, "invalid", "bad disk").body(),
     ErrorClass.BAD_REQUEST),
    (503, GceError(503, "ZONE_RESOURCE_POOL_EXHAUSTED", "none left").body(),
     ErrorClass.CAPACITY),
])
def test_classify_api_errors(status, body, kind):
    assert errors.classify(api_error(status, body)) is kind


def test_transport_errors_are_server_errors():
    assert errors.classify(requests.ConnectionError("reset")) is \
        ErrorClass.SERVER
    assert errors.classify(requests.Timeout("slow")) is ErrorClass.SERVER
    assert errors.classify(ValueError("bug")) is ErrorClass.OTHER


def test_translate_while_creating():
    error = api_error(404, GceError(404, "notFound", "no image").body())
    assert isinstance(errors.translate(error, "Insert"),
                      exceptions.NotFound)
    # A missing image or machine type fails the launch attempt.
    assert isinstance(errors.translate(error, "Insert", creating=True),
                      exceptions.LaunchStatusException)
    lost = errors.translate(
        api_error(503, GceError(503, "backendError", "x").body()),
        "Insert", creating=True)
    assert isinstance(lost, errors.GceApiError) and lost.outcome_unknown


def test_retry_after_header():
    assert errors.retry_after(api_error(
        429, rate_limit_body(), {"Retry-After": "3"})) == 3.0
    assert errors.retry_after(api_error(429, rate_limit_body())) is None


@pytest.mark.parametrize("code,status,expected", [
    ("ZONE_RESOURCE_POOL_EXHAUSTED", 503, exceptions.CapacityException),
    ("ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", 503,
     exceptions.CapacityException),
    ("QUOTA_EXCEEDED", 403, exceptions.QuotaException),
    ("INTERNAL_ERROR", 500, errors.GceApiError),
    ("SERVICE_ACCOUNT_NOT_FOUND", 400, exceptions.LaunchStatusException),
])
def test_operation_errors(code, status, expected):
    op = {"status": "DONE", "httpErrorStatusCode": status,
          "error": {"errors": [{"code": code, "message": "m"}]}}
    error = errors.operation_error("insert of np1", op)
    assert type(error) is expected
    assert code in str(error)
    assert not getattr(error, "outcome_unknown", False)
