# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The fake Kubernetes API, driven by the real ``kubernetes`` client."""

import base64

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException


@pytest.fixture
def api(k8s_fake):
    return k8s_config.new_client_from_config(
        config_file=k8s_fake.kubeconfig, context="admin-cluster.local")


def _ns(name, labels=None):
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels or {}}}


def test_namespace_life_cycle(k8s_fake, api):
    core = k8s.CoreV1Api(api)
    made = core.create_namespace(_ns("pool-1", {"a": "b"}))
    assert made.metadata.name == "pool-1"
    assert made.status.phase == "Active"
    names = [n.metadata.name for n in core.list_namespace().items]
    assert names == ["pool-1"]
    with pytest.raises(ApiException) as e:
        core.create_namespace(_ns("pool-1"))
    assert e.value.status == 409
    assert '"reason":"AlreadyExists"' in e.value.body.replace(" ", "")
    core.delete_namespace("pool-1", body={
        "apiVersion": "v1", "kind": "DeleteOptions",
        "propagationPolicy": "Background"})
    with pytest.raises(ApiException) as e:
        core.read_namespace("pool-1")
    assert e.value.status == 404
    assert k8s_fake.namespaces() == []


def test_terminating_namespace_refuses_content(k8s_fake, api):
    core = k8s.CoreV1Api(api)
    k8s_fake.namespace_finalize_delay = 3600
    core.create_namespace(_ns("slow"))
    core.delete_namespace("slow")
    assert core.read_namespace("slow").status.phase == "Terminating"
    with pytest.raises(ApiException) as e:
        core.create_namespaced_service_account("slow", {
            "metadata": {"name": "zuul-worker"}})
    assert e.value.status == 403


def test_token_controller_fills_secret(k8s_fake, api):
    core = k8s.CoreV1Api(api)
    core.create_namespace(_ns("tok"))
    core.create_namespaced_service_account("tok", {
        "metadata": {"name": "zuul-worker"}})
    made = core.create_namespaced_secret("tok", {
        "metadata": {"name": "zuul-worker", "annotations": {
            "kubernetes.io/service-account.name": "zuul-worker"}},
        "type": "kubernetes.io/service-account-token"})
    assert not made.data
    secret = core.read_namespaced_secret("zuul-worker", "tok")
    token = base64.b64decode(secret.data["token"]).decode()
    ca = base64.b64decode(secret.data["ca.crt"])
    assert ca.startswith(b"-----BEGIN CERTIFICATE")
    # The issued token authenticates.
    conf = k8s.Configuration()
    conf.host = k8s_fake.url
    conf.ssl_ca_cert = k8s_fake.certs["ca.pem"]
    conf.api_key = {"authorization": "Bearer " + token}
    sa_core = k8s.CoreV1Api(k8s.ApiClient(conf))
    assert sa_core.read_namespace("tok").metadata.name == "tok"


def test_slow_token(k8s_fake, api):
    core = k8s.CoreV1Api(api)
    k8s_fake.token_delay = 3600
    core.create_namespace(_ns("slow-token"))
    core.create_namespaced_secret("slow-token", {
        "metadata": {"name": "s"},
        "type": "kubernetes.io/service-account-token"})
    assert not core.read_namespaced_secret("s", "slow-token").data


def test_pod_phases_and_hold(k8s_fake, api):
    core = k8s.CoreV1Api(api)
    core.create_namespace(_ns("pods"))
    pod = {"metadata": {"name": "p1"}, "spec": {"containers": [
        {"name": "p1", "image": "busybox"}]}}
    assert core.create_namespaced_pod("pods", pod).status.phase == "Pending"
    running = core.read_namespaced_pod("p1", "pods")
    assert running.status.phase == "Running"
    assert running.spec.node_name == "fake-node-1"
    k8s_fake.hold_pods()
    core.create_namespaced_pod("pods", dict(pod, metadata={"name": "p2"}))
    assert core.read_namespaced_pod("p2", "pods").status.phase == "Pending"
    k8s_fake.hold_pods(False)
    assert core.read_namespaced_pod("p2", "pods").status.phase == "Running"
    core.delete_namespaced_pod("p2", "pods")
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod("p2", "pods")
    assert e.value.status == 404
    listed = core.list_namespaced_pod("pods")
    assert [p.metadata.name for p in listed.items] == ["p1"]


def test_invalid_and_quota(k8s_fake, api):
    core = k8s.CoreV1Api(api)
    with pytest.raises(ApiException) as e:
        core.create_namespace(_ns("Bad_Name"))
    assert e.value.status == 422
    core.create_namespace(_ns("q"))
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod("q", {"metadata": {"name": "nocont"},
                                         "spec": {"containers": []}})
    assert e.value.status == 422
    k8s_fake.max_pods = 1
    pod = {"metadata": {"name": "a"}, "spec": {"containers": [
        {"name": "a", "image": "x"}]}}
    core.create_namespaced_pod("q", pod)
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod("q", dict(pod, metadata={"name": "b"}))
    assert e.value.status == 403
    assert "exceeded quota" in e.value.body


def test_rbac_and_injected_error(k8s_fake, api):
    core = k8s.CoreV1Api(api)
    rbac = k8s.RbacAuthorizationV1Api(api)
    core.create_namespace(_ns("r"))
    rbac.create_namespaced_role("r", {
        "metadata": {"name": "zuul"}, "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})
    k8s_fake.http_faults.fail("POST rolebindings", 500, {
        "kind": "Status", "code": 500, "message": "boom"})
    binding = {"metadata": {"name": "zuul-role"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                           "kind": "Role", "name": "zuul"},
               "subjects": [{"kind": "ServiceAccount",
                             "name": "zuul-worker", "namespace": "r"}]}
    with pytest.raises(ApiException) as e:
        rbac.create_namespaced_role_binding("r", binding)
    assert e.value.status == 500
    rbac.create_namespaced_role_binding("r", binding)
    assert k8s_fake.names("rolebindings", "r") == ["zuul-role"]
    assert k8s_fake.counts["POST rolebindings"] == 2


def test_unauthorized_context(k8s_fake):
    api = k8s_config.new_client_from_config(
        config_file=k8s_fake.kubeconfig, context="stranger")
    with pytest.raises(ApiException) as e:
        k8s.CoreV1Api(api).list_namespace()
    assert e.value.status == 401


def test_openshift_projects(k8s_fake, api):
    custom = k8s.CustomObjectsApi(api)
    core = k8s.CoreV1Api(api)
    custom.create_cluster_custom_object(
        "project.openshift.io", "v1", "projectrequests", {
            "apiVersion": "project.openshift.io/v1",
            "kind": "ProjectRequest", "metadata": {"name": "proj-1"}})
    project = custom.get_cluster_custom_object(
        "project.openshift.io", "v1", "projects", "proj-1")
    assert project["kind"] == "Project"
    core.create_namespaced_service_account("proj-1", {
        "metadata": {"name": "zuul-worker"}})
    sa = core.read_namespaced_service_account("zuul-worker", "proj-1")
    secret = core.read_namespaced_secret(sa.secrets[0].name, "proj-1")
    assert secret.data["token"]
    custom.create_namespaced_custom_object(
        "authorization.openshift.io", "v1", "proj-1", "rolebindings", {
            "metadata": {"name": "admin-0"}, "roleRef": {"name": "admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "zuul-worker",
                          "namespace": "proj-1"}]})
    assert k8s_fake.names("openshift-rolebindings", "proj-1") == ["admin-0"]
    custom.delete_cluster_custom_object(
        "project.openshift.io", "v1", "projects", "proj-1")
    with pytest.raises(ApiException) as e:
        custom.get_cluster_custom_object(
            "project.openshift.io", "v1", "projects", "proj-1")
    assert e.value.status == 404
