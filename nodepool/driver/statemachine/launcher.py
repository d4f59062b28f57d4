# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Launch of one node, driven step by step by the provider's create runner.

A :class:`NodeLauncher` owns one locked node record in ``building`` state.
Each :meth:`NodeLauncher.step` call advances the adapter's create state
machine, then the host-key scan, and finally marks the node ``ready``.  A
failed attempt is retried (``launch-retries``) after the half-created
instance was deleted; a quota refusal aborts the node so the request
handler can pause and launch a fresh one.
"""

import time

from kazoo.exceptions import NoNodeError, SessionExpiredError

from nodepool import exceptions
from nodepool.zk.models import NodeState
from nodepool.zk import paths


class NodeLauncher:
    """Launch state of one node.

    Not thread-safe: only the provider's create runner calls :meth:`step`;
    other threads read :attr:`complete` (set last).
    """

    def __init__(self, provider, node, label, pool, request, log):
        self.provider = provider
        self.adapter = provider.adapter
        self.node = node
        self.label = label
        self.pool = pool
        self.request = request
        self.log = log
        self.attempts = 0
        self.complete = False
        self.result_key = None  # "ready" or the error stat of the last try
        self.create_sm = None
        self.cleanup_sm = None
        self.scan = None
        self.first_step = None
        self.attempt_start = None
        # The node lock belongs to this ZooKeeper session; once it is gone
        # the record is no longer ours to write.
        self.session_id = provider.services.zk_client.session_id
        self.abandoned = False

    # Runner entry point -------------------------------------------------

    def step(self) -> None:
        if self.complete:
            return
        if self.first_step is None:
            self.first_step = time.monotonic()
        try:
            if not self.abandoned and self._lock_lost():
                self._abandon()
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
        except (SessionExpiredError, NoNodeError):
            self._abandon()
        except exceptions.QuotaException as e:
            self.log.info("Quota exceeded launching node %s: %s",
                          self.node.id, e)
            self.provider.invalidate_quota_cache()
            self.node.state = NodeState.ABORTED
            self._store()
            self._finish(e.statsd_key)
        except Exception as e:
            self._attempt_failed(e)

    # Steps --------------------------------------------------------------

    def _start_attempt(self) -> None:
        self.attempts += 1
        self.attempt_start = time.monotonic()
        node = self.node
        image_external_id = None
        diskimage = getattr(self.label, "diskimage", None)
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
            node.image_id = getattr(self.label, "cloud_image", None)
        if image is not None:
            node.username = image.username
            node.python_path = image.python_path
            node.shell_type = image.shell_type
            node.connection_port = image.connection_port
            node.connection_type = image.connection_type
        node.resources = self.provider.quota_for_label(
            self.label.name, self.pool.name).get_resources()
        self._store()
        hostname = "np" + node.id
        metadata = {
            "nodepool_node_id": node.id,
            "nodepool_pool_name": self.pool.name,
            "nodepool_provider_name": self.provider.name,
        }
        self.create_sm = self.adapter.get_create_state_machine(
            hostname, self.label, image_external_id, metadata, self.request,
            node.az, self.log)

    def _step_create(self) -> None:
        if (time.monotonic() - self.create_sm.start_time
                > self.provider.launch_timeout):
            raise exceptions.ServerCreateTimeoutException(
                "Timeout waiting for instance creation")
        instance = self.create_sm.advance()
        sm_id = self.create_sm.external_id
        if sm_id is not None and self.node.external_id != sm_id:
            # Record the cloud id at once: a crash from here on leaves a
            # node pointing at the instance rather than a leak.
            self.node.external_id = sm_id
            self._store()
        if not self.create_sm.complete:
            return
        self._apply_instance(instance)
        self._store()
        self.scan = self.provider.start_scan(self.node, self.label, self.pool)
        self._step_scan()  # a scan that needs no network is already done

    def _apply_instance(self, instance) -> None:
        node = self.node
        node.external_id = instance.external_id
        # use-internal-ip (AWS, Azure pools) beats the address the
        # instance offers, which is its public one whenever it has one.
        private_ip = instance.private_ipv4 or instance.private_ipv6
        if getattr(self.pool, "use_internal_ip", False) and private_ip:
            node.interface_ip = private_ip
        else:
            node.interface_ip = (instance.interface_ip or instance.public_ipv4
                                 or instance.public_ipv6)
        node.public_ipv4 = instance.public_ipv4
        node.private_ipv4 = instance.private_ipv4
        node.public_ipv6 = instance.public_ipv6
        node.host_id = instance.host_id
        # What the instance knows wins; what the launcher chose stays.
        node.cloud = instance.cloud or node.cloud
        node.region = instance.region or node.region
        node.az = instance.az or node.az
        node.driver_data = instance.driver_data
        node.slot = instance.slot
        node.node_properties = dict(instance.node_properties or {})
        quota = instance.get_quota_information()
        if quota is not None:
            node.resources = quota.get_resources()
        for attr in ("username", "python_path", "shell_type",
                     "connection_port", "connection_type", "host_keys"):
            value = getattr(instance, attr, None)
            if value is not None:
                setattr(node, attr, value)

    def _step_scan(self) -> None:
        if not self.scan.complete:
            return
        if self.scan.exception is not None:
            try:
                self.adapter.notify_nodescan_failure(
                    self.label, self.node.external_id)
            except Exception:
                self.log.exception("Nodescan failure notification failed")
            if getattr(self.label, "console_log", False):
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
        try:
            self.cleanup_sm.advance()
        except exceptions.NotFound:
            self.cleanup_sm.complete = True
        except Exception:
            self.log.exception("Cleanup of failed attempt for node %s",
                               self.node.id)
            self.cleanup_sm = self.adapter.get_delete_state_machine(
                self.node.external_id, self.log)
            return
        if self.cleanup_sm.complete:
            self.cleanup_sm = None
            self.node.external_id = None
            if not self.abandoned:
                self._store()

    def _lock_lost(self) -> bool:
        return (self.provider.services.zk_client.session_id
                != self.session_id)

    def _abandon(self) -> None:
        """Give the node up without touching its record.

        The lock went with the ZooKeeper session (or the record was
        deleted): the deleted-node worker owns the record now and deletes
        any instance it names.  An instance created but not yet recorded
        would leak, so it is deleted here.
        """
        if self.abandoned:
            return
        self.abandoned = True
        self.log.warning("Lost the lock of node %s while launching it",
                         self.node.id)
        self.node.lock = None
        self.node.state = NodeState.FAILED
        if self.scan is not None:
            self.scan.cancel()
            self.scan = None
        external_id = None
        if self.create_sm is not None:
            external_id = self.create_sm.external_id
        if external_id and self.cleanup_sm is None:
            self.node.external_id = external_id
            self.cleanup_sm = self.adapter.get_delete_state_machine(
                external_id, self.log)

    # Outcomes -----------------------------------------------------------

    def _attempt_failed(self, error: Exception) -> None:
        key = getattr(error, "statsd_key", "error.unknown")
        self.provider.report_launch(self, key)
        retries = self.provider.launch_retries
        if isinstance(error, exceptions.LaunchError):
            self.log.warning("Launch attempt %d/%d of node %s failed: %s",
                             self.attempts, retries, self.node.id, error)
        else:
            self.log.exception("Launch attempt %d/%d of node %s failed",
                               self.attempts, retries, self.node.id)
        external_id = self.node.external_id
        if self.create_sm is not None and self.create_sm.external_id:
            external_id = self.create_sm.external_id
        self.create_sm = None
        if self.scan is not None:
            self.scan.cancel()
            self.scan = None
        if self.attempts < retries:
            if external_id:
                self.node.external_id = external_id
                self.cleanup_sm = self.adapter.get_delete_state_machine(
                    external_id, self.log)
            return
        # Out of retries.  The record keeps saying "building" with the
        # external id: the handler declines the request and unlocks the
        # node, and the deleted-node worker removes the instance.
        self.node.external_id = external_id
        if external_id:
            self._store()
        self.node.state = NodeState.FAILED
        self._finish(key, report=False)

    def _finish(self, result_key: str, report: bool = True) -> None:
        self.result_key = result_key
        if report:
            self.provider.report_launch(self, result_key)
        self.complete = True
        self.provider.notify_launch_complete(self)

    def _store(self) -> None:
        self.provider.nodes.store_node(self.node)

    @property
    def duration(self) -> float:
        return time.monotonic() - (self.first_step or time.monotonic())
