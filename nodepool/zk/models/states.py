# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""State enums of the ZooKeeper records; their values are the wire strings."""

import enum


class _WireEnum(str, enum.Enum):
    """A ``str`` enum whose ``str()`` and ``format()`` are the wire value."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class NodeState(_WireEnum):
    """States of a node record."""

    BUILDING = "building"
    TESTING = "testing"   # valid on the wire, never set by nodepool
    READY = "ready"
    IN_USE = "in-use"     # set by Zuul
    USED = "used"         # set by Zuul
    HOLD = "hold"
    DELETING = "deleting"
    FAILED = "failed"
    INIT = "init"
    ABORTED = "aborted"
    DELETED = "deleted"   # tombstone written just before the znode goes


class RequestState(_WireEnum):
    """States of a node request."""

    REQUESTED = "requested"
    PENDING = "pending"
    FULFILLED = "fulfilled"
    FAILED = "failed"


class BuildState(_WireEnum):
    """States of an image build."""

    BUILDING = "building"
    READY = "ready"
    DELETING = "deleting"
    FAILED = "failed"


class UploadState(_WireEnum):
    """States of an image upload."""

    UPLOADING = "uploading"
    READY = "ready"
    DELETING = "deleting"
    FAILED = "failed"
