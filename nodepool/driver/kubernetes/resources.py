# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""What the Kubernetes-family drivers ask the cluster for, as plain data:
object metadata labels, pod bodies, the service account's role, and what a
label's node counts against quota.  No API calls here."""

from nodepool.config.models import thaw
from nodepool.driver.quota import QuotaInformation
from nodepool.driver.statemachine.cloud import format_dynamic

#: The service account a namespace node's user acts as (and the ``user``
#: of every node's connection record).
SERVICE_ACCOUNT = "zuul-worker"
ALL_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]

# A namespace node's role: what a job deploying into it may touch.
NAMESPACE_ROLE = {
    "name": "zuul",
    "rules": [{
        "apiGroups": [""],
        "resources": ["pods", "pods/exec", "pods/log", "pods/portforward",
                      "services", "endpoints", "crontabs", "jobs",
                      "deployments", "replicasets", "configmaps",
                      "secrets"],
        "verbs": ALL_VERBS}],
}

# A pod node's role: enough for Zuul to exec into the pod and stream its
# logs.  ``pods/logs`` is nodepool 11's spelling (the subresource is
# ``pods/log``); kept so that both grant the same.
POD_ROLE = {
    "name": "zuul-restricted",
    "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ALL_VERBS},
        {"apiGroups": [""], "resources": ["pods/logs"], "verbs": ALL_VERBS},
        {"apiGroups": [""], "resources": ["pods/portforward"],
         "verbs": ALL_VERBS},
    ],
}

_KEEP_RUNNING = ["while true; do sleep 30; done;"]


def object_labels(label, metadata: dict, request, log) -> dict:
    """Metadata labels of a node's namespace and pod: the label's
    ``labels``, its formatted ``dynamic-labels``, then nodepool's own
    (which win)."""
    labels = {k: v for k, v in thaw(label.labels).items()}
    labels.update(format_dynamic(label.dynamic_labels, request, log,
                                 "dynamic label",
                                 metadata.get("nodepool_node_id")))
    labels.update(metadata)
    labels["nodepool_node_label"] = label.name
    return labels


def _resources(label) -> dict:
    requests, limits = {}, {}
    for target, cpu, memory, storage in (
            (requests, label.cpu, label.memory, label.storage),
            (limits, label.cpu_limit, label.memory_limit,
             label.storage_limit)):
        if cpu:
            target["cpu"] = int(cpu)
        if memory:
            target["memory"] = "%dMi" % memory
        if storage:
            target["ephemeral-storage"] = "%dM" % storage
        if label.gpu and label.gpu_resource:
            target[label.gpu_resource] = "%.2f" % label.gpu
    resources = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return resources


def pod_body(label, pod_name: str, labels: dict,
             image_pull_secrets=None) -> dict:
    """The Pod to create for a pod node.

    A user-spec label's ``spec`` is used verbatim; otherwise one container
    named after the label that sleeps forever (Zuul execs into it).
    ``image_pull_secrets`` (OpenShift) is always emitted when not None.
    """
    metadata = {"name": pod_name, "labels": labels,
                "annotations": thaw(label.annotations)}
    if label.spec is not None:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
                "spec": thaw(label.spec)}
    container = {
        "name": label.name,
        "image": label.image,
        "imagePullPolicy": label.image_pull,
        "command": ["/bin/sh", "-c"],
        "args": list(_KEEP_RUNNING),
        "env": thaw(label.env),
    }
    resources = _resources(label)
    if resources:
        container["resources"] = resources
    if label.volume_mounts:
        container["volumeMounts"] = thaw(label.volume_mounts)
    if label.privileged is not None:
        container["securityContext"] = {"privileged": label.privileged}
    spec = {"containers": [container]}
    if image_pull_secrets is not None:
        spec["imagePullSecrets"] = thaw(image_pull_secrets)
    if label.node_selector:
        spec["nodeSelector"] = thaw(label.node_selector)
    if label.scheduler_name:
        spec["schedulerName"] = label.scheduler_name
    if label.volumes:
        spec["volumes"] = thaw(label.volumes)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": spec}


def label_quota(label) -> QuotaInformation:
    """What one node of ``label`` counts against quota (its requests)."""
    extra = {}
    if label.storage:
        extra["ephemeral-storage"] = label.storage
    if label.gpu and label.gpu_resource:
        extra[label.gpu_resource] = label.gpu
    extra.update(label.extra_resources)
    return QuotaInformation(cores=label.cpu or 0, instances=1,
                            ram=label.memory or 0, **extra)


def role_binding(namespace: str, role_name: str) -> dict:
    """The RoleBinding giving the namespace's service account its role."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "zuul-role"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role", "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT,
                      "namespace": namespace}],
        # Not a RoleBinding field; nodepool 11 sends it (servers drop it).
        "userNames": ["system:serviceaccount:%s:%s"
                      % (namespace, SERVICE_ACCOUNT)],
    }


def connection(cluster, namespace: str, token: str, ca: str) -> dict:
    """A node's ``connection_port`` record as Zuul reads it (pod nodes add
    ``pod``).  ``ca_crt`` is only given when the server's certificate is
    verified."""
    record = {"namespace": namespace, "host": cluster.host,
              "skiptls": cluster.skiptls, "token": token,
              "user": SERVICE_ACCOUNT}
    if not cluster.skiptls:
        record["ca_crt"] = ca
    return record
