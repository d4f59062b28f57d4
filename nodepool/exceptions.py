# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Exceptions shared across nodepool's packages."""


class NodepoolError(Exception):
    """Base class of nodepool's own errors."""


class ZooKeeperConnectionError(NodepoolError):
    """ZooKeeper could not be reached or the session could not be made."""


class InvalidRecordError(NodepoolError, ValueError):
    """A znode's payload is not a valid record (bad JSON, unknown state)."""


class LockError(NodepoolError):
    """A lock could not be taken (held elsewhere, or timed out)."""


class TimeoutException(LockError):
    """Waiting for a lock timed out."""


class ConfigError(NodepoolError):
    """A configuration file is invalid."""
