# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Shared pieces of the cloud drivers (AWS, OpenStack, Azure).

The cloud drivers work alike: the adapter runs slow API calls in its own
worker threads and reads resource states from shared listings
(:class:`nodepool.driver.listing.SharedListing`); the state machines only
look at futures and listing snapshots.  What that takes in every driver
lives here:

* :class:`CloudAdapter`: running a call in a worker pool for a machine
  (optionally completing only once a listing can show its effect),
  finding the pool of a label, making the create machine, the adapter's
  listings, a recent enough listing for quota accounting, whether a
  label's cloud image is found, warming the caches in the background and
  stopping the threads;
* :class:`CloudInstance`: an instance made from a listing record, its
  quota looked up only when the launcher asks;
* :class:`SafeRequest` and :func:`format_dynamic`: what the templates
  of ``dynamic-tags`` (AWS, Azure) and ``dynamic-instance-properties``
  (OpenStack) may read of a node request, and how they are formatted;
* :class:`CloudStateMachine`, :class:`CloudCreateStateMachine` and
  :class:`CloudDeleteStateMachine`: the fields of a node operation, the
  node and request ids for log messages, and the rule that a machine that
  fails stops watching the adapter's listings.

What an API error means to the launcher is in
:mod:`nodepool.driver.errors`.  The cloud-specific steps stay in the
drivers.
"""

import concurrent.futures
import logging
import math
from typing import Iterable, Mapping, Optional

from nodepool import exceptions
from nodepool.driver.quota import QuotaInformation
from nodepool.driver.statemachine.adapter import (
    Adapter, Instance, StateMachine)
from nodepool.service import TaskThreads, shutdown_executor

# Seconds stop waits for each of an adapter's threads.
STOP_TIMEOUT = 10.0


class CloudInstance(Instance):
    """An instance from a listing ``record`` (kept as :attr:`record`).

    ``quota_loader(record)`` gives its :class:`QuotaInformation`; it is
    only called when the launcher asks (a cached lookup of the instance's
    size); without one the instance counts as one instance.
    """

    def __init__(self, record: dict, quota_loader=None):
        super().__init__()
        self.record = record
        self._quota_loader = quota_loader

    def get_quota_information(self) -> QuotaInformation:
        if self._quota_loader is None:
            return QuotaInformation(instances=1)
        return self._quota_loader(self.record)


class CloudStateMachine(StateMachine):
    """A create or delete machine of a cloud adapter.

    Subclasses implement :meth:`_advance`; :meth:`advance` stops watching
    the adapter's listings (``adapter.listings()``) when it raises, so a
    failed machine does not keep a listing polling.
    """

    def __init__(self, adapter, log):
        super().__init__()
        self.adapter = adapter
        self.log = log
        # The adapter's worker future the machine waits on, if any.
        self._future = None

    def advance(self):
        try:
            return self._advance()
        except Exception:
            self._unwatch()
            raise

    def _advance(self):
        raise NotImplementedError

    def _unwatch(self) -> None:
        for listing in self.adapter.listings():
            listing.unwatch(self)

    def _complete(self) -> None:
        self.state = self.COMPLETE
        self.complete = True


class CloudCreateStateMachine(CloudStateMachine):
    """Create one node's instance: the arguments of
    :meth:`Adapter.get_create_state_machine` plus the label's ``pool``.

    Subclasses that add fields take the same arguments
    (``__init__(self, *args, **kwargs)``) and read them from ``self``.
    """

    def __init__(self, adapter, hostname: str, label, pool,
                 image_external_id: Optional[str], metadata: dict, request,
                 az: Optional[str], log):
        super().__init__(adapter, log)
        self.hostname = hostname
        self.label = label
        self.pool = pool
        self.image_external_id = image_external_id
        self.metadata = dict(metadata)
        self.request = request
        self.az = az

    @property
    def node_id(self):
        return self.metadata.get("nodepool_node_id")

    @property
    def request_id(self):
        return getattr(self.request, "id", None)


class CloudDeleteStateMachine(CloudStateMachine):
    """Delete one node's instance (and what belongs to it)."""

    def __init__(self, adapter, external_id, log):
        super().__init__(adapter, log)
        self.external_id = external_id


class CloudAdapter(Adapter):
    """An adapter whose machines wait on worker futures and shared
    listings.

    Subclasses set :attr:`create_state_machine_class` (built with the
    arguments of :meth:`get_create_state_machine` and the label's pool,
    see :class:`CloudCreateStateMachine`) and return their listings from
    :meth:`listings`.
    """

    create_state_machine_class = None

    def __init__(self, provider_config):
        super().__init__(provider_config)
        #: The adapter's short-lived threads (cache warming); stopped and
        #: joined by :meth:`_stop_threads`.
        self.tasks = TaskThreads(logging.getLogger(
            "nodepool.driver.%s" % provider_config.name))

    def listings(self) -> tuple:
        """The adapter's shared listings, which machines may watch."""
        return ()

    def submit_to(self, executor, func, *args,
                  listing=None) -> concurrent.futures.Future:
        """Run ``func(*args)`` in ``executor`` for a machine; never blocks.

        The runners are woken when the returned future is done.  With a
        ``listing``, the future has ``listed_after``, the listing's time
        when the call returned, and its result is only set once a listing
        that started after that is available: a machine that sees the
        future done finds the call's effect in the listing (the wait is
        the listing thread's, so the worker is free at once).  A stopped
        executor fails the future with :class:`LaunchNodepoolException`.
        """
        try:
            if listing is None:
                future = executor.submit(func, *args)
            else:
                future = self._submit_listed(executor, listing, func, *args)
        except RuntimeError as e:  # shut down
            future = concurrent.futures.Future()
            future.set_exception(exceptions.LaunchNodepoolException(str(e)))
        future.add_done_callback(lambda f: self.wake_runners())
        return future

    def _submit_listed(self, executor, listing, func,
                       *args) -> concurrent.futures.Future:
        outer = concurrent.futures.Future()
        outer.listed_after = -math.inf

        def run():
            result = func(*args)
            outer.listed_after = listing.now()
            return result

        def ran(inner):
            if inner.cancelled():  # the adapter is stopping
                outer.set_exception(exceptions.LaunchNodepoolException(
                    "%s: cancelled" % self.provider.name))
                return
            error = inner.exception()
            if error is not None:
                outer.set_exception(error)
                return
            listing.when_newer(lambda: outer.set_result(inner.result()),
                               after=outer.listed_after)
        executor.submit(run).add_done_callback(ran)
        return outer

    def get_create_state_machine(self, hostname, label, image_external_id,
                                 metadata, request, az, log):
        pool = self._pool_of(label, metadata)
        return self.create_state_machine_class(
            self, hostname, label, pool, image_external_id, metadata,
            request, az, log)

    def _pool_of(self, label, metadata):
        """The pool the launcher chose for the node (its metadata names
        it), else the pool that holds ``label``."""
        pools = self.provider.pools
        pool = pools.get(metadata.get("nodepool_pool_name"))
        if pool is not None:
            return pool
        for pool in pools.values():
            if pool.labels.get(label.name) is label:
                return pool
        raise exceptions.LaunchNodepoolException(
            "Label %s is in no pool of %s" % (label.name, self.provider.name))

    def _recent_snapshot(self, listing, what: str, max_age: float = 10.0,
                         timeout: float = 60.0):
        """A snapshot of ``listing`` at most ``max_age`` seconds old.

        Quota accounting may use a listing a few seconds old; when none
        is that fresh, ask for one and wait for it (quota threads may
        block, state machines never call this).  ``what`` names the
        listing in the error raised when none comes.
        """
        snapshot = listing.recent(max_age, timeout)
        if snapshot is None:
            raise exceptions.NodepoolError(
                "No %s listing for %s" % (what, self.provider.name))
        return snapshot

    def _cloud_image_found(self, label, lookup, *args) -> bool:
        """Whether ``lookup(*args)`` finds the cloud image of ``label``
        (returns anything but None); an error is logged and counts as
        not found.  For :meth:`label_ready`."""
        try:
            found = lookup(*args)
        except Exception as e:
            self.log.warning("Cloud image of label %s unavailable: %s",
                             label.name, e)
            return False
        return found is not None

    def _start_warming(self, prefix: str) -> None:
        """Run :meth:`_warm_caches` in a thread of :attr:`tasks`."""
        self.tasks.spawn("%s-warm-%s" % (prefix, self.provider.name),
                         self._warm_caches)

    def _warm_caches(self) -> None:
        """Look up the quota of the provider and of every label, and
        whether each label is ready: the first request would otherwise
        wait for all of those lookups."""
        try:
            self.get_quota_limits()
            for pool in self.provider.pools.values():
                for label in pool.labels.values():
                    self.get_quota_for_label(label)
                    self.label_ready(label)
        except Exception:
            self.log.exception("Warming the caches failed")

    def _stop_threads(self, threads: Iterable, executor) -> None:
        """Stop the adapter's threads (listings, deleters, :attr:`tasks`),
        cancel the work queued in its worker pool, and give each thread
        (also the pool's) ten seconds to end."""
        threads = tuple(threads)
        for thread in threads:
            thread.stop()
        self.tasks.stop()
        executor.shutdown(wait=False, cancel_futures=True)
        for thread in threads:
            thread.join(STOP_TIMEOUT)
        self.tasks.join(STOP_TIMEOUT)
        shutdown_executor(executor, STOP_TIMEOUT, self.tasks.log)


class SafeRequest:
    """What a ``dynamic-tags`` or ``dynamic-instance-properties`` template
    may read of a node request, the same for every driver: ``id``,
    ``labels`` (the requested node types), ``requestor``,
    ``requestor_data`` (a dict, empty when the request has
    none, so ``{request.requestor_data[job_name]}`` works),
    ``relative_priority``, ``event_id``, ``created_time`` and
    ``tenant_name``.

    Only copies of plain record fields are offered: a template must not
    reach the launcher's objects through the request (its lock, the
    ZooKeeper client).  ``request`` may be None (all fields empty).
    """

    def __init__(self, request):
        self.id = getattr(request, "id", None)
        self.labels = list(getattr(request, "node_types", None) or ())
        self.requestor = getattr(request, "requestor", None)
        data = getattr(request, "requestor_data", None)
        # A copy: format strings cannot call methods, but the request's
        # own data must not be shared.
        self.requestor_data = dict(data) if isinstance(data, dict) else {}
        self.relative_priority = getattr(request, "relative_priority", None)
        self.event_id = getattr(request, "event_id", None)
        self.created_time = getattr(request, "created_time", None)
        self.tenant_name = getattr(request, "tenant_name", None)


def format_dynamic(templates: Mapping[str, str], request, log,
                   what: str, node_id) -> dict:
    """``templates`` (key -> format string) formatted with ``request``
    (as :class:`SafeRequest`).

    A template that fails (an unknown attribute or key, bad syntax) is
    logged with its key, template and the reason and left out: the
    launch goes on without that value.  ``what`` names the values in the
    log ("dynamic tag"...).
    """
    view = SafeRequest(request)
    values = {}
    for key, template in templates.items():
        try:
            values[key] = template.format(request=view)
        except Exception as e:
            log.warning("Skipping %s %s=%r of node %s: %s: %s", what, key,
                        template, node_id, type(e).__name__, e)
    return values
