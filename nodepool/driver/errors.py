# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""What a cloud API error means to the launcher, shared by the drivers.

Each driver sorts its cloud's errors (codes, HTTP statuses, messages) into
an :class:`ErrorClass`; :func:`exception_for` turns the class into the
exception the launcher reacts to:

* capacity: the cloud has no such machine now, :class:`CapacityException`
  (the attempt fails, another may succeed);
* quota: :class:`QuotaException`, the node is aborted and the pool pauses;
* not found: :class:`NotFound`, the resource is gone (a delete is done),
  except while creating, where a missing resource (subnet, image,
  flavor) is a failed launch;
* throttling and server errors that outlived the retries: the driver's
  :class:`CloudApiError`; a server error (a 5xx, a dropped connection, a
  timeout) of a create leaves its outcome unknown (the cloud may have made
  the resource), which the error says (:attr:`CloudApiError.outcome_unknown`)
  so that the create machine can look for the resource before giving up;
* anything else: a failed launch attempt (:class:`LaunchStatusException`).
"""

import enum

from nodepool import exceptions


class ErrorClass(enum.Enum):
    THROTTLE = "throttle"
    SERVER = "server"
    CAPACITY = "capacity"
    QUOTA = "quota"
    NOT_FOUND = "not-found"
    BAD_REQUEST = "bad-request"
    OTHER = "other"


class CloudApiError(exceptions.LaunchError):
    """The cloud kept throttling or failing after the retries.

    ``outcome_unknown``: the failed call was a create that may have been
    carried out all the same (the answer, not the request, was lost).
    """

    statsd_key = "error.api"

    def __init__(self, message: str = "", outcome_unknown: bool = False):
        super().__init__(message)
        self.outcome_unknown = outcome_unknown


def exception_for(kind: ErrorClass, message: str, creating: bool = False,
                  api_error: type = CloudApiError) -> BaseException:
    """The nodepool exception for an error of class ``kind``.

    ``creating``: the call was part of a create, where NotFound means a
    failed launch rather than "already gone".  ``api_error`` is the
    driver's :class:`CloudApiError` subclass.
    """
    if kind is ErrorClass.CAPACITY:
        return exceptions.CapacityException(message)
    if kind is ErrorClass.QUOTA:
        return exceptions.QuotaException(message)
    if kind is ErrorClass.NOT_FOUND and not creating:
        return exceptions.NotFound(message)
    if kind is ErrorClass.SERVER:
        # A throttled call was refused; a server error may have come
        # after the work was done.
        return api_error(message, outcome_unknown=creating)
    if kind is ErrorClass.THROTTLE:
        return api_error(message)
    return exceptions.LaunchStatusException(message)
