# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The Kubernetes adapter and its state machines.

A node is a namespace with a service account that may act in it (label
type ``namespace``) or, in addition, a pod in that namespace whose service
account may only exec into it (type ``pod``).  Creating one is a sequence
of API calls (namespace, service account, token secret, role, role
binding, pod) and two waits (the token controller fills the secret, the
pod reaches ``Running``).  Each call runs in the adapter's worker pool; the
state machine only looks at the futures, and a wait is a call repeated
every :data:`POLL_INTERVAL` seconds.

The node's namespace is its external id and is recorded before anything
is created, so a failed attempt (and the deletion of the node) removes the
namespace, which takes everything in it along.  Leak cleanup finds our
namespaces by the metadata labels every object gets.
"""

import base64
import concurrent.futures
import json
import logging
import threading
import time
from typing import Callable, Optional

import urllib3
from kubernetes.client.rest import ApiException

from nodepool import exceptions
from nodepool.driver import errors
from nodepool.driver.kubernetes import client, resources
from nodepool.driver.statemachine.adapter import Instance, Resource
from nodepool.driver.statemachine.cloud import (
    CloudAdapter, CloudCreateStateMachine, CloudDeleteStateMachine)

#: Seconds between two reads of something the cluster has to finish.
POLL_INTERVAL = 1.0
#: Seconds the token controller gets to fill the service account's secret.
TOKEN_TIMEOUT = 30.0
API_WORKERS = 8
# A deletion in the background: the namespace goes at once, its contents
# after it.
DELETE_OPTIONS = {"apiVersion": "v1", "kind": "DeleteOptions",
                  "propagationPolicy": "Background"}


class KubernetesApiError(errors.CloudApiError):
    """The API kept failing (5xx, throttling, no connection)."""


def _message(error: ApiException) -> str:
    try:
        body = json.loads(error.body or "")
        return "%s (%s)" % (body.get("message") or error.reason,
                            error.status)
    except (ValueError, AttributeError, TypeError):
        return "%s (%s)" % (error.reason, error.status)


def classify(error: ApiException) -> errors.ErrorClass:
    """What an API error means (see :mod:`nodepool.driver.errors`)."""
    status = error.status or 0
    if status == 403 and "exceeded quota" in (error.body or "").lower():
        return errors.ErrorClass.QUOTA
    if status == 404:
        return errors.ErrorClass.NOT_FOUND
    if status == 429:
        return errors.ErrorClass.THROTTLE
    if status == 0 or status >= 500:
        return errors.ErrorClass.SERVER
    return errors.ErrorClass.OTHER


def absent(read: Callable[[], object]) -> bool:
    """Whether ``read()`` finds nothing (a 404): a wait's condition."""
    try:
        read()
    except ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


class Step:
    """One API call of a state machine: ``call(cluster)`` in a worker.

    ``done(result)`` says whether the machine may go on (None: at once);
    if not, the call is repeated after :data:`POLL_INTERVAL`, for at most
    ``timeout`` seconds (None: the launch timeout bounds it).
    ``on_submit()`` runs in the runner just before the first call.
    """

    def __init__(self, name: str, call, done=None, timeout=None,
                 on_submit=None):
        self.name = name
        self.call = call
        self.done = done
        self.timeout = timeout
        self.on_submit = on_submit


class StepRunner:
    """Runs a machine's :class:`Step` list, one call at a time.

    Mixed into the create and delete machines (which set ``adapter``,
    ``_future`` and ``state``); :meth:`_run_steps` returns True once the
    last step is done and raises what a call raised.
    """

    creating = True

    def _init_steps(self, steps) -> None:
        self.steps = list(steps)
        self._index = 0
        self._next_call = 0.0
        self._step_start = None

    def _run_steps(self) -> bool:
        if self._future is not None:
            if not self._future.done():
                return False
            future, self._future = self._future, None
            step = self.steps[self._index]
            result = future.result()
            if step.done is not None and not step.done(result):
                if (step.timeout is not None and time.monotonic()
                        - self._step_start > step.timeout):
                    raise exceptions.LaunchNodepoolException(
                        "%s: gave up after %ds" % (step.name, step.timeout))
                self._next_call = time.monotonic() + POLL_INTERVAL
                return False
            self._index += 1
            self._step_start = None
        if self._index >= len(self.steps):
            return True
        if time.monotonic() < self._next_call:
            return False
        step = self.steps[self._index]
        if self._step_start is None:
            self._step_start = time.monotonic()
            self.state = step.name
            if step.on_submit is not None:
                step.on_submit()
        self._future = self.adapter.run(step.call, creating=self.creating)
        return False


class KubernetesInstance(Instance):
    """A node's namespace (and pod) as the launcher sees it.

    ``connection`` is the record Zuul reads (``connection_port``); the
    label's python path and shell type are passed on since there is no
    image to take them from.
    """

    def __init__(self, external_id, metadata, quota=None, label=None,
                 connection_type=None, connection=None, pod=None,
                 host_id=None, cloud=None):
        super().__init__()
        self.external_id = external_id
        self.metadata = dict(metadata or {})
        self.ready = True
        self.interface_ip = pod
        self.host_id = host_id
        self.cloud = cloud
        self.connection_type = connection_type
        self.connection_port = connection
        if label is not None:
            self.python_path = label.python_path
            self.shell_type = label.shell_type
        self._quota = quota

    def get_quota_information(self):
        if self._quota is None:
            return super().get_quota_information()
        return self._quota.copy()


class KubernetesCreateStateMachine(StepRunner, CloudCreateStateMachine):
    """Create a namespace node or a pod node (see the module doc)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.namespace = self._namespace_name()
        self.labels = resources.object_labels(
            self.label, self.metadata, self.request, self.log)
        self.token = None
        self.ca = None
        self.host_id = None
        self._init_steps(self._steps())

    def _namespace_name(self) -> str:
        """The namespace the node's objects go into."""
        return "%s-%s" % (self.pool.name, self.node_id)

    def _node_external_id(self) -> str:
        """The node's external id: what deleting the node deletes."""
        return self.namespace

    # What to do -----------------------------------------------------------

    def _steps(self) -> list:
        ns = self.namespace
        role = (resources.NAMESPACE_ROLE if self.label.kind == "namespace"
                else resources.POD_ROLE)
        steps = [
            Step("create-namespace", self._create_namespace,
                 on_submit=self._claim_namespace),
            Step("create-service-account", lambda c: (
                c.core.create_namespaced_service_account(ns, {
                    "metadata": {"name": resources.SERVICE_ACCOUNT}}))),
            Step("create-token-secret", lambda c: (
                c.core.create_namespaced_secret(ns, {
                    "metadata": {"name": resources.SERVICE_ACCOUNT,
                                 "annotations": {
                                     "kubernetes.io/service-account.name":
                                     resources.SERVICE_ACCOUNT}},
                    "type": "kubernetes.io/service-account-token"}))),
            Step("wait-for-token", lambda c: c.core.read_namespaced_secret(
                resources.SERVICE_ACCOUNT, ns), done=self._take_token,
                timeout=TOKEN_TIMEOUT),
            Step("create-role", lambda c: c.rbac.create_namespaced_role(
                ns, {"metadata": {"name": role["name"]},
                     "rules": role["rules"]})),
            Step("create-role-binding", lambda c: (
                c.rbac.create_namespaced_role_binding(
                    ns, resources.role_binding(ns, role["name"])))),
        ]
        if self.label.kind == "pod":
            steps += self._pod_steps(ns, self.label.name)
        return steps

    def _pod_steps(self, namespace, pod_name, image_pull_secrets=None,
                   on_submit=None):
        body = resources.pod_body(self.label, pod_name, self.labels,
                                  image_pull_secrets)
        return [
            Step("create-pod", lambda c: c.core.create_namespaced_pod(
                namespace, body), on_submit=on_submit),
            Step("wait-for-pod", lambda c: c.core.read_namespaced_pod(
                pod_name, namespace), done=self._pod_running),
        ]

    def _claim_namespace(self) -> None:
        # Recorded before the create: a lost answer leaves no leak.
        self.external_id = self._node_external_id()

    def _create_namespace(self, cluster):
        return cluster.core.create_namespace({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": self.namespace, "labels": self.labels}})

    def _take_token(self, secret) -> bool:
        data = secret.data or {}
        if not data.get("token") or not data.get("ca.crt"):
            return False
        self.token = base64.b64decode(data["token"]).decode()
        self.ca = data["ca.crt"]
        return True

    def _pod_running(self, pod) -> bool:
        phase = pod.status.phase if pod.status is not None else None
        if phase in ("Failed", "Succeeded"):
            # Will never run again (nodepool 11 waits until its timeout).
            raise exceptions.LaunchStatusException(
                "Pod %s in %s ended (%s) before it was ready"
                % (pod.metadata.name, self.namespace, phase))
        if phase != "Running":
            return False
        self.host_id = pod.spec.node_name if pod.spec else None
        return True

    # The result -----------------------------------------------------------

    def _advance(self):
        if not self._run_steps():
            return None
        self._complete()
        return self._instance()

    #: The ``connection_type`` of a node that is a whole namespace.
    namespace_connection_type = "namespace"
    #: Whether the connection record names the namespace again as
    #: ``name`` and the node records the pod's host (both as nodepool 11
    #: does it for this driver only).
    records_name_and_host = True

    def _instance(self) -> KubernetesInstance:
        record = resources.connection(self.adapter.cluster(),
                                      self.namespace, self.token, self.ca)
        if self.records_name_and_host:
            record["name"] = self.namespace
        pod = None
        kind = self.namespace_connection_type
        if self.label.kind == "pod":
            pod = record["pod"] = self.label.name
            kind = "kubectl"
        return KubernetesInstance(
            self.namespace, self.labels,
            quota=resources.label_quota(self.label), label=self.label,
            connection_type=kind, connection=record, pod=pod,
            host_id=self.host_id if self.records_name_and_host else None,
            cloud=self.adapter.provider.context)


class KubernetesDeleteStateMachine(StepRunner, CloudDeleteStateMachine):
    """Delete what a node's external id names (see
    :meth:`KubernetesAdapter.node_calls`) and wait until it is gone."""

    creating = False

    def __init__(self, adapter, external_id, log):
        super().__init__(adapter, external_id, log)
        self._init_steps(self._steps())

    def _steps(self) -> list:
        delete, read = self.adapter.node_calls(self.external_id)
        return [
            Step("delete", delete),
            Step("wait-for-deletion", lambda c: absent(lambda: read(c)),
                 done=bool),
        ]

    def _advance(self):
        if self._run_steps():
            self._complete()
        return None


class KubernetesAdapter(CloudAdapter):
    """One Kubernetes provider's connection to its cluster.

    :param in_cluster: where the in-cluster credentials are read when no
        kubeconfig exists.
    """

    create_state_machine_class = KubernetesCreateStateMachine
    delete_state_machine_class = KubernetesDeleteStateMachine

    def __init__(self, provider_config, in_cluster=None):
        super().__init__(provider_config)
        self.log = logging.getLogger(
            "nodepool.driver.kubernetes.%s" % provider_config.name)
        self._in_cluster = in_cluster
        self._cluster = None
        self._cluster_lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=API_WORKERS,
            thread_name_prefix="k8s-api-%s" % provider_config.name)

    # The cluster -----------------------------------------------------------

    def cluster(self) -> client.Cluster:
        """The context's clients; connects on first use and again after a
        failure (a kubeconfig fixed later is picked up).  Raises
        LaunchNodepoolException when the context cannot be used."""
        with self._cluster_lock:
            if self._cluster is None:
                try:
                    self._cluster = client.connect(
                        self.provider.context, self._in_cluster, self.log)
                except Exception as e:
                    self.log.error("Cannot use context %s of provider %s: "
                                   "%s", self.provider.context,
                                   self.provider.name, e)
                    raise exceptions.LaunchNodepoolException(
                        "context %s unusable: %s"
                        % (self.provider.context, e)) from e
            return self._cluster

    def call(self, func, creating: bool = False):
        """``func(cluster)``, API errors turned into nodepool's (blocks)."""
        cluster = self.cluster()
        try:
            return func(cluster)
        except ApiException as e:
            raise errors.exception_for(
                classify(e), _message(e), creating=creating,
                api_error=KubernetesApiError) from e
        except urllib3.exceptions.HTTPError as e:
            raise KubernetesApiError(
                "API unreachable: %s" % e, outcome_unknown=creating) from e

    def run(self, func, creating: bool = False):
        """:meth:`call` in the worker pool; a future (never blocks)."""
        return self.submit_to(self._executor, self.call, func, creating)

    def stop(self) -> None:
        self._stop_threads((), self._executor)

    # State machines ---------------------------------------------------------

    def get_delete_state_machine(self, external_id, log):
        return self.delete_state_machine_class(self, external_id, log)

    # Nodes in the cluster ----------------------------------------------------

    def node_calls(self, external_id):
        """``(delete, read)``: calls (given the cluster) that delete and
        read what the node's ``external_id`` names, here its namespace.
        """
        return (lambda c: c.core.delete_namespace(
                    external_id, body=DELETE_OPTIONS),
                lambda c: c.core.read_namespace(external_id))

    def list_nodes(self, cluster) -> list:
        """``(external id, metadata labels)`` of everything in the cluster
        named like a node of our pools (``<pool>-<integer>`` namespaces),
        whoever made it (blocks)."""
        found = []
        for ns in cluster.core.list_namespace().items:
            name = ns.metadata.name
            prefix, _, suffix = name.rpartition("-")
            if prefix in self.provider.pools and suffix.isdigit():
                found.append((name, dict(ns.metadata.labels or {})))
        return found

    def list_instances(self):
        try:
            nodes = self.call(self.list_nodes)
        except exceptions.LaunchError as e:
            self.log.warning("Cannot list the cluster's nodes: %s", e)
            return []
        return [KubernetesInstance(name, labels, cloud=self.provider.context)
                for name, labels in nodes]

    def list_resources(self):
        # The leak metric is nodepool.provider.<name>.leaked.nodes, as in
        # nodepool 11.
        return [Resource(labels, "node", name)
                for name, labels in self.call(self.list_nodes)]

    def delete_resource(self, resource) -> None:
        delete, _ = self.node_calls(resource.id)
        try:
            self.call(delete)
        except exceptions.NotFound:
            pass

    def get_quota_for_label(self, label):
        return resources.label_quota(label)

    def get_console_log(self, label, external_id) -> Optional[str]:
        raise NotImplementedError
