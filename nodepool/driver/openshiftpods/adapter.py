# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The OpenShift pods adapter: pods in the pools' existing projects.

Nothing but the pod is created: the pod is made with the provider's own
credentials, which Zuul then uses as well.  A node's external id is
``<pool>-<pod>`` with the pod named ``<label>-<node id>``.
"""

from kubernetes.client.rest import ApiException

from nodepool import exceptions
from nodepool.driver.kubernetes import resources
from nodepool.driver.kubernetes.adapter import KubernetesInstance
from nodepool.driver.openshift.adapter import (
    OpenshiftAdapter, OpenshiftCreateStateMachine)


class OpenshiftPodsCreateStateMachine(OpenshiftCreateStateMachine):
    """Create one pod in the pool's project."""

    def _namespace_name(self) -> str:
        return self.pool.name

    @property
    def pod_name(self) -> str:
        return "%s-%s" % (self.label.name, self.node_id)

    def _node_external_id(self) -> str:
        return "%s-%s" % (self.pool.name, self.pod_name)

    def _steps(self) -> list:
        return self._pod_steps(self.namespace, self.pod_name,
                               self.label.image_pull_secrets,
                               on_submit=self._claim_namespace)

    def _instance(self) -> KubernetesInstance:
        cluster = self.adapter.cluster()
        # The provider's own credentials; ca_crt is always given (None
        # when the credentials have no CA file).
        record = {"pod": self.pod_name, "namespace": self.namespace,
                  "host": cluster.host, "skiptls": cluster.skiptls,
                  "token": cluster.token, "user": resources.SERVICE_ACCOUNT,
                  "ca_crt": cluster.ca}
        return KubernetesInstance(
            self._node_external_id(), self.labels,
            quota=resources.label_quota(self.label), label=self.label,
            connection_type="kubectl", connection=record, pod=self.pod_name,
            host_id=self.host_id, cloud=self.adapter.provider.context)


class OpenshiftPodsAdapter(OpenshiftAdapter):
    """One OpenShift pods provider's connection to its cluster."""

    create_state_machine_class = OpenshiftPodsCreateStateMachine

    def split_id(self, external_id):
        """``(project, pod)`` of an external id; raises NotFound when no
        pool of the provider names the project (the pool was removed: the
        pod cannot be found any more)."""
        for pool in sorted(self.provider.pools, key=len, reverse=True):
            if external_id.startswith(pool + "-"):
                return pool, external_id[len(pool) + 1:]
        raise exceptions.NotFound(
            "No pool of %s holds %s" % (self.provider.name, external_id))

    def node_calls(self, external_id):
        def delete(cluster):
            namespace, pod = self.split_id(external_id)
            return cluster.core.delete_namespaced_pod(pod, namespace)

        def read(cluster):
            namespace, pod = self.split_id(external_id)
            return cluster.core.read_namespaced_pod(pod, namespace)
        return delete, read

    def list_nodes(self, cluster) -> list:
        """Pods of this provider in the pools' projects."""
        found = []
        selector = "nodepool_provider_name=%s" % self.provider.name
        for pool in self.provider.pools:
            try:
                pods = cluster.core.list_namespaced_pod(
                    pool, label_selector=selector).items
            except ApiException as e:
                if e.status == 404:
                    continue
                raise
            for pod in pods:
                found.append(("%s-%s" % (pool, pod.metadata.name),
                              dict(pod.metadata.labels or {})))
        return found
