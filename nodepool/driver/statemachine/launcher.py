# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Launch of one node, driven step by step by the provider's create runner.

A :class:`NodeLauncher` owns one locked node record in ``building`` state.
Each :meth:`NodeLauncher.step` call advances the adapter's create state
machine, then the host-key scan, and finally marks the node ``ready``.  A
failed attempt is retried (``launch-retries``) after the half-created
instance was deleted; a quota refusal aborts the node so the request
handler can pause and launch a fresh one.  For a label with a fallback
key, a capacity failure moves the next attempt to the next (type, zone)
of its :class:`~nodepool.driver.capacity.CapacityPlan` without using up
a retry, and the launch fails once no option is left
(doc/source/capacity-fallback.rst).
"""

import time

from kazoo.exceptions import NoNodeError

from nodepool import exceptions
from nodepool.driver.capacity import format_option
from nodepool.driver.statemachine.launch_record import LaunchRecordMixin
from nodepool.zk.client import CONNECTION_ERRORS
from nodepool.zk.models import NodeState
from nodepool.zk import paths


class NodeLauncher(LaunchRecordMixin):
    """Launch state of one node.

    Not thread-safe: only the provider's create runner calls :meth:`step`;
    other threads read :attr:`complete` (set last) and may call
    :meth:`cancel`.

    ZooKeeper faults (:class:`LaunchRecordMixin`): a write that fails
    because the connection dropped is kept and written again once the
    connection is back; the launch goes on meanwhile, but it only completes
    once its final state is stored.  If the session (and with it the node
    lock) was lost, the launch takes the lock again and resumes when the
    record is still ours to take; otherwise it deletes whatever instance it
    created and ends failed.
    """

    def __init__(self, provider, node, label, pool, request, log,
                 guard=None, plan=None):
        self.provider = provider
        self.adapter = provider.adapter
        self.node = node
        self.label = label
        self.pool = pool
        self.request = request
        self.log = log
        self.attempts = 0
        # Capacity fallback (None: the label has no fallback key).
        self.plan = plan
        self.option = None  # the (type, zone) of the current attempt
        self.capacity_failures = 0
        self.no_capacity = None  # why no option was left, if so
        self.complete = False
        self.result_key = None  # "ready" or the error stat of the last try
        self.create_sm = None
        self.cleanup_sm = None
        self.cleanup_start = None
        self.scan = None
        self.first_step = None
        self.attempt_start = None
        # The node lock belongs to the session this guard was taken in.
        self.guard = guard or provider.services.zk_client.guard()
        self.abandoned = False  # the record is no longer ours to write
        self.cancelled = False  # the request handler gave the launch up
        self._unsaved = False   # the last write of the record failed
        self._pending_result = None  # finish once the record is stored
        self._pending_report = True

    # Runner entry point -------------------------------------------------

    def cancel(self) -> None:
        """Stop the launch (any thread): the instance is deleted, the node
        ends failed.  Used when the request is no longer ours."""
        self.cancelled = True

    def step(self) -> None:
        if self.complete:
            return
        if self.first_step is None:
            self.first_step = time.monotonic()
        try:
            if self.guard.lost and not self.abandoned:
                if not self._zk.connected:
                    return  # wait for a session to decide with
                self._take_back()
            if self.cancelled and not self.abandoned:
                self._give_up()
            if self._unsaved and not self._flush():
                return
            if self._pending_result is not None:
                self._finish(self._pending_result)
                return
            if self.cleanup_sm is not None:
                self._step_cleanup()
                return
            if self.abandoned:
                self._finish("error.zksession")
                return
            if self.create_sm is None:
                self._start_attempt()
            if self.scan is None:
                self._step_create()
            else:
                self._step_scan()
        except NoNodeError:
            self._abandon("its record was deleted")
        except CONNECTION_ERRORS as e:
            # Whatever failed is repeated on a later pass; the session
            # guard tells then whether our locks survived.
            self.log.debug("ZooKeeper unavailable launching node %s: %r",
                           self.node.id, e)
        except NoCapacityLeft as e:
            self.no_capacity = str(e)
            self.log.warning("Launch of node %s failed: %s", self.node.id, e)
            self._fail("error.capacity", report=False)
        except exceptions.QuotaException as e:
            self.log.info("Quota exceeded launching node %s: %s",
                          self.node.id, e)
            self.provider.quota.invalidate()
            self.node.state = NodeState.ABORTED
            self._store()
            self._finish(e.statsd_key)
        except Exception as e:
            self._attempt_failed(e)

    def abort(self, error: Exception) -> None:
        """An unexpected error escaped :meth:`step`: end failed.

        The runner calls this rather than dropping the launch, so that the
        request handler sees a terminal state and declines; the record
        keeps the instance's id for the deleted-node worker.
        """
        self.log.error("Launch of node %s aborted: %r", self.node.id, error)
        try:
            self.node.external_id = self._created_id()
            self.create_sm = None
            self._cancel_scan()
            self.node.state = NodeState.FAILED
            self._store()
        except Exception:
            self.log.exception("Could not store aborted node %s",
                               self.node.id)
        self.node.state = NodeState.FAILED
        self.result_key = "error.unknown"
        self.complete = True
        self.provider.notify_launch_complete(self)

    # Steps --------------------------------------------------------------

    def _start_attempt(self) -> None:
        label = self._choose_option()
        self.attempts += 1
        self.attempt_start = time.monotonic()
        node = self.node
        image_external_id = None
        diskimage = self.label.diskimage_name
        image = self.provider.label_image(self.label)
        if diskimage:
            upload = self.provider.current_upload(diskimage)
            if upload is None:
                raise exceptions.LaunchNodepoolException(
                    "Unable to find current cloud image %s in %s"
                    % (diskimage, self.provider.name))
            node.image_id = paths.upload_path(
                upload.image_name, upload.build_id, upload.provider_name,
                upload.id)
            image_external_id = upload.external_id
        else:
            node.image_id = self.label.cloud_image_name
        if image is not None:
            node.username = image.username
            node.python_path = image.python_path
            node.shell_type = image.shell_type
            node.connection_port = image.connection_port
            node.connection_type = image.connection_type
        node.resources = self.provider.quota.quota_for_label(
            self.label.name, self.pool.name).get_resources()
        # Not stored yet: nobody needs these before the instance exists;
        # they go with the next write (the cloud id, or the failure).
        hostname = "np" + node.id
        metadata = {
            "nodepool_node_id": node.id,
            "nodepool_pool_name": self.pool.name,
            "nodepool_provider_name": self.provider.name,
        }
        self.create_sm = self.adapter.get_create_state_machine(
            hostname, label, image_external_id, metadata, self.request,
            node.az, self.log)

    def _choose_option(self):
        """The label to launch this attempt: the label itself, or, with a
        capacity plan, the label as the next (type, zone) option (the
        node's ``az`` becomes the option's zone).  Raises
        :class:`NoCapacityLeft` when every option was refused or is
        cooling down."""
        if self.plan is None:
            return self.label
        option = self.plan.next_option()
        if option is None:
            raise NoCapacityLeft(
                "no capacity option left for label %s in %s (refused in "
                "this launch: %s; the others are cooling down)" % (
                    self.label.name, self.provider.name,
                    self.plan.describe()))
        if option != self.option and self.plan.tried:
            self.log.info("Node %s: trying %s", self.node.id,
                          format_option(option))
        self.option = option
        self.plan.attempt(option)
        if option[1] is not None:
            self.node.az = option[1]
        return self.label.for_capacity_type(option[0])

    def _step_create(self) -> None:
        if (time.monotonic() - self.create_sm.start_time
                > self.provider.launch_timeout):
            raise exceptions.ServerCreateTimeoutException(
                "Timeout waiting for instance creation")
        instance = self.create_sm.advance()
        sm_id = self.create_sm.external_id
        if sm_id is not None and self.node.external_id != sm_id:
            # Record the cloud id at once: a crash from here on leaves a
            # node pointing at the instance rather than a leak.  (An
            # instance complete at once has it stored with its addresses.)
            self.node.external_id = sm_id
            if not self.create_sm.complete:
                self._store()
        if not self.create_sm.complete:
            return
        self._apply_instance(instance)
        self.scan = self.provider.start_scan(self.node, self.label, self.pool)
        if not self.scan.complete:
            self._store()  # the addresses, while the scan runs
            return
        self._step_scan()  # a scan that needs no network is already done

    def _step_scan(self) -> None:
        if not self.scan.complete:
            return
        if self.scan.exception is not None:
            try:
                self.adapter.notify_nodescan_failure(
                    self.label, self.node.external_id)
            except Exception:
                self.log.exception("Nodescan failure notification failed")
            if self.label.wants_console_log:
                self.provider.log_console(self.label, self.node.external_id,
                                          self.log)
            raise self.scan.exception
        if self.scan.result:
            self.node.host_keys = list(self.scan.result)
        self.node.state = NodeState.READY
        self._store()
        self.log.info("Node %s is ready (%s)", self.node.id,
                      self.node.interface_ip)
        self._finish("ready")

    def _step_cleanup(self) -> None:
        """Delete the instance of a failed attempt before the next one.

        Bounded by the launch timeout: a delete that keeps failing ends
        the launch failed, the record naming the instance, so that the
        deleted-node worker (and leak cleanup after it) own the instance
        and the request does not wait forever.
        """
        if self.cleanup_start is None:
            self.cleanup_start = time.monotonic()
        try:
            self.cleanup_sm.advance()
        except exceptions.NotFound:
            self.cleanup_sm.complete = True
        except Exception:
            self.log.exception("Cleanup of failed attempt for node %s",
                               self.node.id)
            if (time.monotonic() - self.cleanup_start
                    > self.provider.launch_timeout):
                self._cleanup_gave_up()
                return
            self.cleanup_sm = self.adapter.get_delete_state_machine(
                self.node.external_id, self.log)
            return
        if self.cleanup_sm.complete:
            self.cleanup_sm = None
            self.cleanup_start = None
            if self.abandoned:
                return
            self.node.external_id = None
            self._store()

    def _cleanup_gave_up(self) -> None:
        self.log.error("Giving up deleting instance %s of node %s after "
                       "%ds; the deleted-node worker takes over",
                       self.node.external_id, self.node.id,
                       self.provider.launch_timeout)
        self.cleanup_sm = None
        if self.abandoned:
            self._finish("error.zksession")
        else:
            self._fail(self.result_key or "error.unknown")

    def _created_id(self):
        """The cloud id of the instance this launch made, if any."""
        if self.create_sm is not None and self.create_sm.external_id:
            return self.create_sm.external_id
        return self.node.external_id

    def _give_up(self) -> None:
        """Cancelled by the owner while we hold the node: delete the
        instance, then end failed."""
        if self.cleanup_sm is not None or self._pending_result is not None:
            return
        self.log.info("Launch of node %s cancelled", self.node.id)
        self._cancel_scan()
        external_id = self._created_id()
        self.create_sm = None
        if external_id:
            self.node.external_id = external_id
            self._store()
            self.cleanup_sm = self.adapter.get_delete_state_machine(
                external_id, self.log)
        else:
            self._fail("error.cancelled", report=False)

    def _cancel_scan(self) -> None:
        if self.scan is not None:
            self.scan.cancel()
            self.scan = None

    # Outcomes -----------------------------------------------------------

    def _attempt_failed(self, error: Exception) -> None:
        key = getattr(error, "statsd_key", "error.unknown")
        self.result_key = key
        self.provider.report_launch(self, key)
        retries = self.provider.launch_retries
        if self.plan is not None and self.option is not None and \
                isinstance(error, exceptions.CapacityException):
            # Not a retry used up: the next attempt is somewhere else.
            self.plan.no_capacity(self.option)
            self.capacity_failures += 1
            self.log.warning("No capacity for node %s as %s (attempt %d): "
                             "%s", self.node.id, format_option(self.option),
                             self.attempts, error)
        elif isinstance(error, exceptions.LaunchError):
            self.log.warning("Launch attempt %d/%d of node %s failed: %s",
                             self.attempts, retries, self.node.id, error)
        else:
            self.log.exception("Launch attempt %d/%d of node %s failed",
                               self.attempts, retries, self.node.id)
        external_id = self._created_id()
        self.create_sm = None
        self._cancel_scan()
        if (self.attempts - self.capacity_failures < retries
                and not self.cancelled):
            if external_id:
                self.node.external_id = external_id
                self.cleanup_sm = self.adapter.get_delete_state_machine(
                    external_id, self.log)
            return
        # Out of retries.  The record says "failed" with the external id:
        # the handler declines the request and unlocks the node, and the
        # deleted-node worker removes the instance.
        self.node.external_id = external_id
        self._fail(key, report=False)

    def _fail(self, result_key: str, report: bool = True) -> None:
        """End failed; the state is stored before the launch completes."""
        self.node.state = NodeState.FAILED
        self._store()
        self._finish(result_key, report=report)

    def _finish(self, result_key: str, report: bool = True) -> None:
        if self._unsaved and not self.abandoned:
            # Complete only once the record says what we say: the handler
            # acts on it (fulfils, declines) as soon as we are complete.
            self._pending_result = result_key
            self._pending_report = report
            return
        if self._pending_result is not None:
            report = self._pending_report
            self._pending_result = None
        self.result_key = result_key
        if report:
            self.provider.report_launch(self, result_key)
        if self.cancelled and self.node.lock is not None:
            # Nobody waits for this node: the deleted-node worker takes it.
            self.provider.nodes.unlock_node(self.node)
        self.complete = True
        self.provider.notify_launch_complete(self)

    @property
    def duration(self) -> float:
        return time.monotonic() - (self.first_step or time.monotonic())


class NoCapacityLeft(exceptions.CapacityException):
    """Every (type, zone) option of a launch was refused for lack of
    capacity or is cooling down: the launch fails without trying, and
    the request handler declines the request with this message."""
