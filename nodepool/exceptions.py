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


class LaunchError(NodepoolError):
    """A node launch attempt failed; ``statsd_key`` names the stat."""

    statsd_key = "error.unknown"


class LaunchNodepoolException(LaunchError):
    statsd_key = "error.nodepool"


class LaunchStatusException(LaunchError):
    statsd_key = "error.status"


class LaunchNetworkException(LaunchError):
    statsd_key = "error.network"


class CapacityException(LaunchError):
    statsd_key = "error.capacity"


class IPAddTimeoutException(LaunchError):
    statsd_key = "error.ipadd"


class ServerCreateTimeoutException(LaunchError):
    statsd_key = "error.servercreatetimeout"


class ServerDeleteTimeoutException(LaunchError):
    statsd_key = "error.serverdeletetimeout"


class ImageCreateException(LaunchError):
    statsd_key = "error.imagetimeout"


class QuotaException(LaunchError):
    """The cloud refused for lack of quota: the node is aborted and the
    request handler pauses, instead of counting a failed attempt."""

    statsd_key = "error.quota"


class RuntimeConfigurationException(NodepoolError):
    """A label can never be served by a provider (e.g. unknown flavor)."""


class NotFound(NodepoolError):
    """A cloud resource does not exist (any more)."""
