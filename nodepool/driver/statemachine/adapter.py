# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The contract between the launcher and a cloud driver.

A driver supplies one :class:`Adapter` per provider.  The launcher never
waits on the cloud: it asks the adapter for a *state machine* per node
operation (create, delete) and calls its :meth:`StateMachine.advance`
repeatedly from one runner thread per provider.  ``advance()`` must return
quickly: anything slow (an API call that takes a second, a rate limiter)
belongs in the adapter's own worker threads, whose results the state
machine picks up on a later call.

Everything here is cloud-neutral; drivers subclass these classes.
"""

import time
from typing import Callable, Iterable, Optional

from nodepool.driver.quota import QuotaInformation


class Instance:
    """A cloud instance as the launcher sees it.

    Drivers set the attributes in their constructor.  ``metadata`` carries
    the tags nodepool put on the instance (``nodepool_node_id``,
    ``nodepool_provider_name``, ``nodepool_pool_name``) and is what leak
    cleanup and unmanaged-quota accounting read.

    The optional override attributes (``username``, ``python_path``,
    ``shell_type``, ``connection_port``, ``connection_type``, ``host_keys``)
    stay None unless the instance knows better than the label config.
    """

    def __init__(self):
        self.external_id = None
        self.metadata: dict = {}
        self.ready = False
        self.deleted = False
        self.interface_ip: Optional[str] = None
        self.public_ipv4: Optional[str] = None
        self.public_ipv6: Optional[str] = None
        self.private_ipv4: Optional[str] = None
        self.private_ipv6: Optional[str] = None
        self.cloud: Optional[str] = None
        self.az: Optional[str] = None
        self.region: Optional[str] = None
        self.host_id: Optional[str] = None
        self.driver_data = None
        self.slot: Optional[int] = None
        self.node_properties: dict = {}
        # Replaces the node's attributes (the pool's node-attributes)
        # when set: an instance that knows better merges them itself.
        self.attributes: Optional[dict] = None
        self.username: Optional[str] = None
        self.python_path: Optional[str] = None
        self.shell_type: Optional[str] = None
        self.connection_port: Optional[int] = None
        self.connection_type: Optional[str] = None
        self.host_keys: Optional[list] = None

    def get_quota_information(self) -> QuotaInformation:
        """Resources this instance uses (default: one instance)."""
        return QuotaInformation(instances=1)

    def __repr__(self):
        return "<%s %s>" % (type(self).__name__, self.external_id)


class Resource:
    """A cloud resource other than an instance that may leak (a volume, an
    image, a floating IP...).  ``type`` is alphanumeric; the leak metric is
    named after :attr:`plural_metric_name`."""

    def __init__(self, metadata: dict, type: str, id=None):
        self.metadata = metadata
        self.type = type
        self.id = id

    @property
    def plural_metric_name(self) -> str:
        return self.type + "s"

    def __repr__(self):
        return "<Resource %s %s>" % (self.type, self.id)


class CloudImage:
    """An image as the cloud lists it (see :meth:`Adapter.list_images`).

    ``metadata`` holds the image's properties or tags; images nodepool
    uploaded carry ``nodepool_build_id``, ``nodepool_upload_id`` and
    ``nodepool_provider_name`` there.
    """

    def __init__(self, id, name: Optional[str] = None,
                 metadata: Optional[dict] = None):
        self.id = id
        self.name = name
        self.metadata = dict(metadata or {})

    def __repr__(self):
        return "<CloudImage %s %s>" % (self.id, self.name)


class StateMachine:
    """One create or delete operation, advanced step by step.

    ``state`` starts as :attr:`START`; ``complete`` turns True when done.
    ``external_id`` is set as soon as the cloud has assigned one, so the
    launcher can record it before the operation finishes (a crash then
    leaves a node record pointing at the instance, not a leak).
    """

    START = "start"
    COMPLETE = "complete"

    def __init__(self):
        self.state = self.START
        self.external_id = None
        self.complete = False
        self.start_time = time.monotonic()

    def advance(self) -> Optional[Instance]:
        """Make progress without blocking.

        A create machine returns the :class:`Instance` on the call that
        completes it.  Errors are raised as exceptions; quota problems as
        :class:`nodepool.driver.exceptions.QuotaException`, vanished
        resources on delete as :class:`NotFound`.
        """
        raise NotImplementedError


class Adapter:
    """One provider's connection to its cloud.

    Methods other than the state machine factories may block (they run in
    the launcher's cleanup and quota threads, never in the runners).
    Thread-safety: the launcher calls an adapter from several threads.
    """

    # Set once by the provider that drives this adapter's state machines.
    _wake_callback: Optional[Callable[[], None]] = None

    def __init__(self, provider_config):
        self.provider = provider_config

    def set_wake_callback(self, callback: Callable[[], None]) -> None:
        """Have :meth:`wake_runners` call ``callback`` (the provider's own
        ``wake_runners``).  The provider registers it when it is built,
        before any state machine runs; ``callback`` must not block."""
        self._wake_callback = callback

    def wake_runners(self) -> None:
        """Ask the runners for a pass now instead of at their next tick.

        Adapters call it (from any thread, it never blocks) when
        background work a state machine waits for has finished, e.g. from
        a future's done-callback.  Does nothing until a provider
        registered itself with :meth:`set_wake_callback`.
        """
        callback = self._wake_callback
        if callback is not None:
            callback()

    def rate_limiters(self) -> dict:
        """The adapter's API rate limiters by short name (``mutate``,
        ``compute``...), for the rate gauges and the web app."""
        return {}

    def stop(self) -> None:
        """Release clients and worker threads."""

    def get_create_state_machine(self, hostname: str, label,
                                 image_external_id: Optional[str],
                                 metadata: dict, request, az: Optional[str],
                                 log) -> StateMachine:
        """A machine that creates an instance for ``label``.

        ``image_external_id`` is the uploaded image's cloud id for diskimage
        labels, else None (the adapter resolves the label's cloud image).
        ``metadata`` must be stored on the instance (as tags) and come back
        in :meth:`list_instances` and :meth:`list_resources`.
        """
        raise NotImplementedError

    def get_delete_state_machine(self, external_id, log) -> StateMachine:
        """A machine that deletes the instance and what belongs to it."""
        raise NotImplementedError

    def list_instances(self) -> Iterable[Instance]:
        """Every instance visible to this provider (not only nodepool's)."""
        raise NotImplementedError

    def list_resources(self) -> Iterable[Resource]:
        """Every leak-checkable resource (with nodepool metadata or not)."""
        return []

    def delete_resource(self, resource: Resource) -> None:
        """Delete a leaked resource."""
        raise NotImplementedError

    def get_quota_limits(self) -> QuotaInformation:
        """The provider's limits; default unlimited."""
        return QuotaInformation(default=float("inf"))

    def get_quota_for_label(self, label) -> QuotaInformation:
        """What one node of ``label`` uses.

        May raise :class:`RuntimeConfigurationException` when the label can
        never work (unknown flavor): requests for it are declined.
        """
        return QuotaInformation(instances=1)

    def get_azs(self) -> list:
        """Availability zones to spread nodes over; ``[None]`` if none."""
        return [None]

    def capacity_zones(self, pool) -> tuple:
        """The zones of ``pool`` a launch may be placed in (passed as the
        create machine's ``az``), for capacity fallback: a launch that
        failed for lack of capacity moves to another of them.  Empty (the
        default) when the adapter cannot choose the zone.  May block (the
        request handler asks, never a state machine)."""
        return ()

    def label_ready(self, label) -> bool:
        """Whether the label's cloud image is available."""
        return True

    def upload_image(self, provider_image, image_name: str, filename: str,
                     image_format: str, metadata: dict, md5: str,
                     sha256: str) -> str:
        """Upload a built image; returns its cloud id (builder only)."""
        raise NotImplementedError

    def delete_image(self, external_id: str) -> None:
        """Delete an uploaded image (builder only)."""
        raise NotImplementedError

    def list_images(self) -> Iterable[CloudImage]:
        """The provider's own images, whoever uploaded them, as
        :class:`CloudImage` records with their properties as metadata.

        Only images this account or project owns, not public or shared
        ones.  ``nodepool alien-image-list`` compares those tagged with
        ``nodepool_build_id`` to the upload records.  May block and raise
        on cloud errors.  The default lists nothing: a driver without
        uploadable images has none to report.
        """
        return []

    def get_console_log(self, label, external_id) -> str:
        """The instance's console output, for launch failure logs."""
        raise NotImplementedError

    def notify_nodescan_failure(self, label, external_id) -> None:
        """Called when host-key scanning of a new instance failed."""
