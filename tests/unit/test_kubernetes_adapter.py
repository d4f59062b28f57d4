# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The Kubernetes driver's pieces: label resolution, pod bodies, quota,
error classes and reaching the cluster (kubeconfig and in-cluster) against
the fake API server."""

import base64
import dataclasses
import logging

import pytest
import urllib3
import yaml
from kubernetes.client.rest import ApiException

from nodepool import exceptions
from nodepool.config import load_config
from nodepool.driver import errors
from nodepool.driver.kubernetes import client, resources
from nodepool.driver.kubernetes.adapter import KubernetesAdapter, classify
from tests.configs import corpus

VALID = corpus.VALID_DIR + "/kubernetes.yaml"
LOG = logging.getLogger("test")


@pytest.fixture(scope="module")
def provider():
    return load_config(VALID).providers["kubespray"]


def _label(provider, name):
    return provider.pools["main"].labels[name]


def test_pool_defaults_resolve_into_labels(provider):
    plain = _label(provider, "pod-fedora")
    assert (plain.cpu, plain.memory, plain.storage) == (2, 1024, 10)
    assert (plain.cpu_limit, plain.memory_limit, plain.storage_limit) == (
        8, 4196, 40)
    assert plain.extra_resources == {"mygpu": 1}
    big = _label(provider, "pod-big")
    assert (big.cpu, big.cpu_limit, big.memory_limit) == (4, 6, 4196)
    assert big.extra_resources == {"mygpu": 2}
    assert _label(provider, "kubernetes-namespace").kind == "namespace"
    assert _label(provider, "pod-custom").kind == "pod"
    pool = provider.pools["main"]
    assert pool.max_cores == 100 and pool.max_ram == 8192
    assert pool.max_resources == {"mygpu": 4}
    assert pool.checks_host_keys is False


def test_pod_body_of_builder_label(provider):
    body = resources.pod_body(_label(provider, "pod-big"), "pod-big",
                              {"a": "b"})
    assert body["metadata"] == {"name": "pod-big", "labels": {"a": "b"},
                                "annotations": {"owner": "ci"}}
    container = body["spec"]["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": 4, "memory": "2048Mi",
                     "ephemeral-storage": "20M",
                     "vendor.example/gpu": "0.50"},
        "limits": {"cpu": 6, "memory": "4196Mi", "ephemeral-storage": "40M",
                   "vendor.example/gpu": "0.50"}}
    assert container["imagePullPolicy"] == "Always"
    assert container["securityContext"] == {"privileged": True}
    assert body["spec"]["nodeSelector"] == {"disk": "ssd"}
    assert body["spec"]["schedulerName"] == "special"
    assert "imagePullSecrets" not in body["spec"]
    with_secrets = resources.pod_body(_label(provider, "pod-fedora"), "p",
                                      {}, image_pull_secrets=())
    assert with_secrets["spec"]["imagePullSecrets"] == []


def test_pod_body_of_spec_label(provider):
    body = resources.pod_body(_label(provider, "pod-custom"), "pc", {})
    assert body["spec"] == {"containers": [{"name": "main",
                                            "image": "ubuntu:jammy"}]}


def test_label_quota(provider):
    quota = resources.label_quota(_label(provider, "pod-big"))
    assert quota.get_resources() == {
        "cores": 4, "instances": 1, "ram": 2048, "ephemeral-storage": 20,
        "vendor.example/gpu": 0.5, "mygpu": 2}


def test_object_labels_nodepool_keys_win(provider):
    label = _label(provider, "pod-big")

    class Request:
        tenant_name = "t1"
    labels = resources.object_labels(
        label, {"nodepool_node_id": "0001", "nodepool_pool_name": "main",
                "nodepool_provider_name": "kubespray"}, Request(), LOG)
    assert labels == {"env": "qa", "tenant": "t1",
                      "nodepool_node_id": "0001",
                      "nodepool_pool_name": "main",
                      "nodepool_provider_name": "kubespray",
                      "nodepool_node_label": "pod-big"}


@pytest.mark.parametrize("status,body,kind", [
    (403, '{"message": "pods is forbidden: exceeded quota: q"}',
     errors.ErrorClass.QUOTA),
    (403, '{"message": "forbidden"}', errors.ErrorClass.OTHER),
    (404, "{}", errors.ErrorClass.NOT_FOUND),
    (409, "{}", errors.ErrorClass.OTHER),
    (422, "{}", errors.ErrorClass.OTHER),
    (429, "{}", errors.ErrorClass.THROTTLE),
    (500, "{}", errors.ErrorClass.SERVER),
])
def test_classify(status, body, kind):
    error = ApiException(status=status, reason="x")
    error.body = body
    assert classify(error) is kind


def test_connect_through_kubeconfig(k8s_fake):
    cluster = client.connect("admin-cluster.local")
    assert cluster.host == k8s_fake.url
    assert cluster.token == k8s_fake.admin_token
    assert cluster.skiptls is False
    with open(k8s_fake.certs["ca.pem"], "rb") as f:
        assert base64.b64decode(cluster.ca) == f.read()
    assert cluster.core.list_namespace().items == []


def test_unknown_context_is_a_launch_error(k8s_fake, provider):
    adapter = KubernetesAdapter(dataclasses.replace(
        provider, context="no-such-context"))
    try:
        with pytest.raises(exceptions.LaunchNodepoolException):
            adapter.cluster()
        assert adapter.list_instances() == []
    finally:
        adapter.stop()


def test_in_cluster_without_kubeconfig(k8s_fake, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    token = tmp_path / "token"
    token.write_text(k8s_fake.admin_token)
    host, port = k8s_fake.url[len("https://"):].split(":")
    paths = client.InClusterPaths(
        token=str(token), ca=k8s_fake.certs["ca.pem"],
        environ={"KUBERNETES_SERVICE_HOST": host,
                 "KUBERNETES_SERVICE_PORT": port})
    cluster = client.connect(None, paths)
    assert cluster.token == k8s_fake.admin_token
    assert cluster.host == k8s_fake.url
    k8s_fake.add_namespace("seen")
    names = [n.metadata.name for n in cluster.core.list_namespace().items]
    assert names == ["seen"]


def test_empty_kubeconfig_counts_as_none(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.write_text("")
    good = tmp_path / "good"
    good.write_text(yaml.safe_dump({"apiVersion": "v1"}))
    monkeypatch.setenv("KUBECONFIG", "%s:%s" % (empty, tmp_path / "none"))
    assert client.kubeconfig_files() == []
    monkeypatch.setenv("KUBECONFIG", "%s:%s" % (empty, good))
    assert client.kubeconfig_files() == [str(good)]


def test_calls_time_out(k8s_fake):
    cluster = client.connect("admin-cluster.local", timeout=(1, 0.2))
    # The first try and urllib3's three retries all go unanswered.
    k8s_fake.http_faults.lose_answer("GET namespaces", how="hold", times=4)
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        cluster.core.list_namespace()
    assert client.connect("admin-cluster.local").api_client.timeout == \
        client.API_TIMEOUT
