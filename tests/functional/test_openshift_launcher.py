# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The OpenShift and OpenShift pods drivers in the launcher, on the fake
API server's project API (tests/fakes/kubernetes.py), with a real
ZooKeeper and a Zuul-like client."""

import pytest

from nodepool.zk.models import RequestState
from tests.fixtures.waits import wait_for
from tests.functional.conftest import read_nodes, served_by

OPENSHIFT = """
labels:
  - name: openshift-project
  - name: openshift-pod
providers:
  - name: openshift
    driver: openshift
    context: admin-cluster.local
    launch-retries: {retries}
    max-projects: {max_servers}
    pools:
      - name: main
        labels:
          - name: openshift-project
            type: project
          - name: openshift-pod
            type: pod
            image: docker.io/fedora:28
            python-path: /usr/bin/python3
            memory: 512
            image-pull-secrets:
              - name: registry-secret
"""

OPENSHIFT_PODS = """
labels:
  - name: pod-fedora
  - name: pod-custom
providers:
  - name: openshift-pods
    driver: openshiftpods
    context: admin-cluster.local
    launch-retries: {retries}
    max-pods: {max_servers}
    pools:
      - name: myproject
        labels:
          - name: pod-fedora
            image: docker.io/fedora:28
          - name: pod-custom
            spec:
              containers:
                - name: pod-custom
                  image: ubuntu:jammy
"""


@pytest.fixture
def launcher_factory(k8s_fake, launcher_factory):
    """Launchers set up after and torn down before the fake API."""
    return launcher_factory


def _release(zuul, nodes):
    zuul.finish(nodes)
    wait_for(lambda: not read_nodes(zuul.kazoo), timeout=30)


def test_project_node(launcher_factory, k8s_fake, zuul):
    launcher_factory(OPENSHIFT)
    _, nodes = served_by(zuul, zuul.submit(["openshift-project"]))
    node = nodes[0]
    project = "main-" + node.id
    assert node.connection_type == "project"
    assert node.external_id == project
    assert node.interface_ip is None and node.host_id is None
    assert node.cloud == "admin-cluster.local"
    port = node.connection_port
    assert set(port) == {"namespace", "host", "skiptls", "token", "user",
                         "ca_crt"}
    assert port["namespace"] == project
    assert port["token"] in k8s_fake.tokens
    assert port["token"] != k8s_fake.admin_token
    binding = k8s_fake.get("openshift-rolebindings", project, "admin-0")
    assert binding["roleRef"] == {"name": "admin"}
    # No secret of nodepool's: the token came from OpenShift's own.
    assert "zuul-worker" not in k8s_fake.names("secrets", project)
    _release(zuul, nodes)
    wait_for(lambda: k8s_fake.namespaces() == [], timeout=30)


def test_openshift_pod_node(launcher_factory, k8s_fake, zuul):
    launcher_factory(OPENSHIFT)
    _, nodes = served_by(zuul, zuul.submit(["openshift-pod"]))
    node = nodes[0]
    project = "main-" + node.id
    assert node.connection_type == "kubectl"
    assert node.interface_ip == "openshift-pod"
    assert node.host_id is None
    assert node.python_path == "/usr/bin/python3"
    assert node.connection_port["pod"] == "openshift-pod"
    assert node.resources == {"cores": 0, "instances": 1, "ram": 512}
    pod = k8s_fake.get("pods", project, "openshift-pod")
    assert pod["spec"]["imagePullSecrets"] == [{"name": "registry-secret"}]
    _release(zuul, nodes)
    wait_for(lambda: k8s_fake.namespaces() == [], timeout=30)


def test_openshift_quota_refusal_retries_later(launcher_factory, k8s_fake,
                                               zuul):
    k8s_fake.max_pods = 1
    launcher_factory(OPENSHIFT)
    _, first = served_by(zuul, zuul.submit(["openshift-pod"]))
    second = zuul.submit(["openshift-pod"])
    wait_for(lambda: k8s_fake.counts["POST pods"] >= 2, timeout=30)
    # The refused project is removed; the request waits.
    wait_for(lambda: len(k8s_fake.namespaces()) == 1, timeout=30)
    assert zuul.get_request(second).state != RequestState.FAILED
    zuul.finish(first)
    _, nodes = served_by(zuul, second)
    _release(zuul, nodes)


def test_openshift_leaked_project_deleted(launcher_factory, k8s_fake,
                                          zuul):
    k8s_fake.add_namespace("main-0000009999", {
        "nodepool_provider_name": "openshift",
        "nodepool_node_id": "0000009999"})
    k8s_fake.add_namespace("main-0000008888", {
        "nodepool_provider_name": "other", "nodepool_node_id": "0000008888"})
    launcher_factory(OPENSHIFT)
    wait_for(lambda: k8s_fake.namespaces() == ["main-0000008888"],
             timeout=30)


def test_openshiftpods_pod_node(launcher_factory, k8s_fake, zuul):
    k8s_fake.add_namespace("myproject")
    launcher_factory(OPENSHIFT_PODS)
    _, nodes = served_by(zuul, zuul.submit(["pod-fedora"]))
    node = nodes[0]
    pod_name = "pod-fedora-" + node.id
    assert node.external_id == "myproject-" + pod_name
    assert node.interface_ip == pod_name
    assert node.connection_type == "kubectl"
    assert node.host_id == "fake-node-1"
    assert node.connection_port == {
        "pod": pod_name, "namespace": "myproject", "host": k8s_fake.url,
        "skiptls": False, "token": k8s_fake.admin_token,
        "user": "zuul-worker", "ca_crt": node.connection_port["ca_crt"]}
    assert node.connection_port["ca_crt"]
    pod = k8s_fake.get("pods", "myproject", pod_name)
    assert pod["spec"]["imagePullSecrets"] == []
    # Nothing but the pod was made.
    assert k8s_fake.namespaces() == ["myproject"]
    assert k8s_fake.names("serviceaccounts", "myproject") == []
    _release(zuul, nodes)
    wait_for(lambda: k8s_fake.names("pods", "myproject") == [], timeout=30)


def test_openshiftpods_custom_and_max_pods(launcher_factory, k8s_fake,
                                           zuul):
    k8s_fake.add_namespace("myproject")
    launcher = launcher_factory(OPENSHIFT_PODS, max_servers=1)
    _, first = served_by(zuul, zuul.submit(["pod-custom"]))
    pod = k8s_fake.get("pods", "myproject", "pod-custom-" + first[0].id)
    assert pod["spec"] == {"containers": [
        {"name": "pod-custom", "image": "ubuntu:jammy"}],
        "nodeName": "fake-node-1"}
    second = zuul.submit(["pod-fedora"])
    worker = launcher.pool_workers[("openshift-pods", "myproject")]
    wait_for(lambda: worker.paused, timeout=30)
    assert k8s_fake.counts["POST pods"] == 1
    zuul.finish(first)
    _, nodes = served_by(zuul, second)
    _release(zuul, nodes)
    wait_for(lambda: k8s_fake.names("pods", "myproject") == [], timeout=30)


def test_openshiftpods_leaked_pod_deleted(launcher_factory, k8s_fake, zuul):
    k8s_fake.add_namespace("myproject")
    for name, provider in (("leaked", "openshift-pods"), ("kept", "other")):
        k8s_fake.add_pod("myproject", name, {
            "nodepool_provider_name": provider,
            "nodepool_node_id": "0000009999"})
    launcher_factory(OPENSHIFT_PODS)
    wait_for(lambda: k8s_fake.names("pods", "myproject") == ["kept"],
             timeout=30)
