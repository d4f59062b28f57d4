# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The OpenShift adapter: the Kubernetes adapter with projects.

A node is a project (requested through ``project.openshift.io``, which
makes the namespace with the requester's rights) with the service account
``zuul-worker`` bound to the cluster role ``admin``, and for a pod node a
pod in it.  OpenShift's controllers give the service account its token
secret; nodepool reads it through the account's ``secrets`` list instead
of making one.  The project and role binding calls go through the
client's custom-object API.
"""

import base64

from nodepool.driver.kubernetes import resources
from nodepool.driver.kubernetes.adapter import (
    TOKEN_TIMEOUT, KubernetesAdapter, KubernetesCreateStateMachine, Step)

PROJECTS = ("project.openshift.io", "v1", "projects")
PROJECT_REQUESTS = ("project.openshift.io", "v1", "projectrequests")
ROLE_BINDINGS = ("authorization.openshift.io", "v1")


def token_of_service_account(cluster, namespace):
    """``(token, base64 CA)`` from the first token secret listed by the
    namespace's service account, or None while there is none."""
    account = cluster.core.read_namespaced_service_account(
        resources.SERVICE_ACCOUNT, namespace)
    for ref in account.secrets or ():
        secret = cluster.core.read_namespaced_secret(ref.name, namespace)
        data = secret.data or {}
        if data.get("token") and data.get("ca.crt"):
            return base64.b64decode(data["token"]).decode(), data["ca.crt"]
    return None


def admin_binding(namespace):
    """The OpenShift RoleBinding making the service account admin of the
    project."""
    account = resources.SERVICE_ACCOUNT
    return {
        "apiVersion": "authorization.openshift.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "admin-0"},
        "roleRef": {"name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": account,
                      "namespace": namespace}],
        "userNames": ["system:serviceaccount:%s:%s" % (namespace, account)],
    }


class OpenshiftCreateStateMachine(KubernetesCreateStateMachine):
    """Create a project node or a pod node in a fresh project."""

    namespace_connection_type = "project"
    # nodepool 11 records neither for OpenShift nodes.
    records_name_and_host = False

    def _steps(self) -> list:
        ns = self.namespace
        request = {"apiVersion": "project.openshift.io/v1",
                   "kind": "ProjectRequest",
                   "metadata": {"name": ns, "labels": self.labels}}
        steps = [
            Step("request-project",
                 lambda c: c.custom.create_cluster_custom_object(
                     *PROJECT_REQUESTS, request),
                 on_submit=self._claim_namespace),
            Step("create-service-account", lambda c: (
                c.core.create_namespaced_service_account(ns, {
                    "metadata": {"name": resources.SERVICE_ACCOUNT}}))),
            Step("wait-for-token", lambda c: token_of_service_account(
                c, ns), done=self._take_account_token,
                timeout=TOKEN_TIMEOUT),
            Step("create-role-binding", lambda c: (
                c.custom.create_namespaced_custom_object(
                    *ROLE_BINDINGS, ns, "rolebindings",
                    admin_binding(ns)))),
        ]
        if self.label.kind == "pod":
            steps += self._pod_steps(ns, self.label.name,
                                     self.label.image_pull_secrets)
        return steps

    def _take_account_token(self, found) -> bool:
        if found is None:
            return False
        self.token, self.ca = found
        return True


class OpenshiftAdapter(KubernetesAdapter):
    """One OpenShift provider's connection to its cluster."""

    create_state_machine_class = OpenshiftCreateStateMachine

    def node_calls(self, external_id):
        return (lambda c: c.custom.delete_cluster_custom_object(
                    *PROJECTS, external_id),
                lambda c: c.custom.get_cluster_custom_object(
                    *PROJECTS, external_id))

    def list_nodes(self, cluster) -> list:
        """Projects named like a node of our pools (those the
        credentials may see)."""
        found = []
        listed = cluster.custom.list_cluster_custom_object(*PROJECTS)
        for project in listed.get("items", ()):
            metadata = project.get("metadata") or {}
            name = metadata.get("name", "")
            prefix, _, suffix = name.rpartition("-")
            if prefix in self.provider.pools and suffix.isdigit():
                found.append((name, dict(metadata.get("labels") or {})))
        return found
