# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The Kubernetes driver in the launcher: the launcher in-process with a
kubernetes provider on the loopback fake API server (tests/fakes/
kubernetes.py; the real client over HTTPS through a kubeconfig), a real
ZooKeeper and a Zuul-like client."""

import base64
import textwrap

import pytest

from nodepool.cmd import nodepoolcmd
from nodepool.zk.models import NodeState, RequestState
from tests.fixtures.waits import wait_for
from tests.functional.conftest import read_nodes, served_by
from tests.functional.test_cli import table, zk_config

CONFIG = """
labels:
  - name: pod-fedora
  - name: kubernetes-namespace
  - name: pod-extra
  - name: pod-custom
providers:
  - name: kubespray
    driver: kubernetes
    context: admin-cluster.local
    launch-retries: {retries}
    launch-timeout: {launch_timeout}
    pools:
      - name: main
        max-servers: {max_servers}
        node-attributes:
          key1: value1
        labels:
          - name: kubernetes-namespace
            type: namespace
          - name: pod-fedora
            type: pod
            image: docker.io/fedora:28
          - name: pod-extra
            type: pod
            image: docker.io/fedora:28
            python-path: /usr/bin/python3
            shell-type: csh
            cpu: 2
            memory: 1024
            storage: 10
            gpu: 0.5
            gpu-resource: gpu-vendor.example/example-gpu
            labels:
              environment: qa
            dynamic-labels:
              tenant: "{{request.tenant_name}}"
            annotations:
              team: ci
            privileged: true
            node-selector:
              storageType: ssd
            scheduler-name: myscheduler
            env:
              - name: A
                value: "1"
            volumes:
              - name: my-csi-inline-vol
                csi:
                  driver: inline.storage.kubernetes.io
            volume-mounts:
              - mountPath: /data
                name: my-csi-inline-vol
          - name: pod-custom
            type: pod
            spec:
              containers:
                - name: pod-custom
                  image: ubuntu:jammy
                  command: ["/bin/sh", "-c"]
                  args: ["while true; do sleep 30; done;"]
"""


@pytest.fixture
def launcher_factory(k8s_fake, launcher_factory):
    """Launchers set up after and torn down before the fake API."""
    return launcher_factory


@pytest.fixture
def start(launcher_factory):
    def start(**params):
        params.setdefault("launch_timeout", 30)
        return launcher_factory(CONFIG, **params)
    return start


def _gone(fake, namespace):
    return namespace not in fake.namespaces()


def _release(zuul, fake, nodes):
    zuul.finish(nodes)
    wait_for(lambda: not read_nodes(zuul.kazoo), timeout=30)
    wait_for(lambda: fake.namespaces() == [], timeout=30)


def test_pod_node(start, k8s_fake, zuul):
    start()
    _, nodes = served_by(zuul, zuul.submit(["pod-fedora"]))
    node = nodes[0]
    ns = "main-" + node.id
    assert node.state == NodeState.IN_USE
    assert node.connection_type == "kubectl"
    assert node.external_id == ns
    assert node.interface_ip == "pod-fedora"
    assert node.host_id == "fake-node-1"
    assert node.cloud == "admin-cluster.local"
    assert node.python_path == "auto"
    assert node.shell_type is None
    assert node.attributes == {"key1": "value1"}
    assert node.resources == {"cores": 0, "instances": 1, "ram": 0}
    port = node.connection_port
    assert set(port) == {"name", "namespace", "host", "skiptls", "token",
                         "user", "ca_crt", "pod"}
    assert port["name"] == port["namespace"] == ns
    assert port["pod"] == "pod-fedora"
    assert port["host"] == k8s_fake.url
    assert port["skiptls"] is False
    assert port["user"] == "zuul-worker"
    assert port["token"] in k8s_fake.tokens
    assert port["token"] != k8s_fake.admin_token
    assert base64.b64decode(port["ca_crt"]).startswith(b"-----BEGIN")
    pod = k8s_fake.get("pods", ns, "pod-fedora")
    assert pod["metadata"]["labels"] == {
        "nodepool_node_id": node.id, "nodepool_provider_name": "kubespray",
        "nodepool_pool_name": "main", "nodepool_node_label": "pod-fedora"}
    assert pod["metadata"]["annotations"] == {}
    assert pod["spec"]["containers"] == [{
        "name": "pod-fedora", "image": "docker.io/fedora:28",
        "imagePullPolicy": "IfNotPresent", "command": ["/bin/sh", "-c"],
        "args": ["while true; do sleep 30; done;"], "env": []}]
    assert "restartPolicy" not in pod["spec"]
    role = k8s_fake.get("roles", ns, "zuul-restricted")
    assert [r["resources"] for r in role["rules"]] == [
        ["pods"], ["pods/exec"], ["pods/logs"], ["pods/portforward"]]
    binding = k8s_fake.get("rolebindings", ns, "zuul-role")
    assert binding["roleRef"]["name"] == "zuul-restricted"
    _release(zuul, k8s_fake, nodes)


def test_namespace_node(start, k8s_fake, zuul):
    start()
    _, nodes = served_by(zuul, zuul.submit(["kubernetes-namespace"]))
    node = nodes[0]
    ns = "main-" + node.id
    assert node.connection_type == "namespace"
    assert node.interface_ip is None
    assert node.host_id is None
    assert node.external_id == ns
    assert node.connection_port["name"] == ns
    assert node.connection_port["namespace"] == ns
    assert "pod" not in node.connection_port
    assert k8s_fake.names("pods", ns) == []
    assert k8s_fake.get("roles", ns, "zuul")["rules"][0]["resources"][:3] \
        == ["pods", "pods/exec", "pods/log"]
    assert k8s_fake.names("serviceaccounts", ns) == ["zuul-worker"]
    _release(zuul, k8s_fake, nodes)


def test_pod_options(start, k8s_fake, zuul):
    start()
    _, nodes = served_by(zuul, zuul.submit(["pod-extra"],
                                           tenant_name="tenant-1"))
    node = nodes[0]
    assert node.python_path == "/usr/bin/python3"
    assert node.shell_type == "csh"
    assert node.resources == {
        "cores": 2, "instances": 1, "ram": 1024, "ephemeral-storage": 10,
        "gpu-vendor.example/example-gpu": 0.5}
    pod = k8s_fake.get("pods", "main-" + node.id, "pod-extra")
    assert pod["metadata"]["labels"]["environment"] == "qa"
    assert pod["metadata"]["labels"]["tenant"] == "tenant-1"
    assert pod["metadata"]["annotations"] == {"team": "ci"}
    ns = k8s_fake.get("namespaces", "", "main-" + node.id)
    assert ns["metadata"]["labels"]["tenant"] == "tenant-1"
    container = pod["spec"]["containers"][0]
    wanted = {"cpu": 2, "memory": "1024Mi", "ephemeral-storage": "10M",
              "gpu-vendor.example/example-gpu": "0.50"}
    assert container["resources"] == {"requests": wanted, "limits": wanted}
    assert container["securityContext"] == {"privileged": True}
    assert container["env"] == [{"name": "A", "value": "1"}]
    assert container["volumeMounts"] == [
        {"mountPath": "/data", "name": "my-csi-inline-vol"}]
    assert pod["spec"]["nodeSelector"] == {"storageType": "ssd"}
    assert pod["spec"]["schedulerName"] == "myscheduler"
    assert pod["spec"]["volumes"][0]["name"] == "my-csi-inline-vol"
    _release(zuul, k8s_fake, nodes)


def test_custom_spec(start, k8s_fake, zuul):
    start()
    _, nodes = served_by(zuul, zuul.submit(["pod-custom"]))
    pod = k8s_fake.get("pods", "main-" + nodes[0].id, "pod-custom")
    assert pod["spec"]["containers"] == [{
        "name": "pod-custom", "image": "ubuntu:jammy",
        "command": ["/bin/sh", "-c"],
        "args": ["while true; do sleep 30; done;"]}]
    _release(zuul, k8s_fake, nodes)


def test_slow_token(start, k8s_fake, zuul):
    k8s_fake.token_delay = 1.5
    start()
    _, nodes = served_by(zuul, zuul.submit(["kubernetes-namespace"]))
    assert k8s_fake.counts["GET secrets"] >= 2
    _release(zuul, k8s_fake, nodes)


def test_pod_never_running(start, k8s_fake, zuul):
    k8s_fake.hold_pods()
    start(retries=1, launch_timeout=2)
    request = zuul.submit(["pod-fedora"])
    done = zuul.wait_for_request(request, timeout=30)
    assert done.state == RequestState.FAILED
    # The failed node's namespace goes with it.
    wait_for(lambda: not read_nodes(zuul.kazoo), timeout=30)
    wait_for(lambda: k8s_fake.namespaces() == [], timeout=30)
    assert k8s_fake.counts["POST pods"] == 1


def test_failed_pod_fails_the_attempt_at_once(start, k8s_fake, zuul):
    k8s_fake.pod_outcome = "Failed"
    # A launch timeout the test would notice: the failure comes first.
    start(retries=2, launch_timeout=300)
    done = zuul.wait_for_request(zuul.submit(["pod-fedora"]), timeout=30)
    assert done.state == RequestState.FAILED
    assert k8s_fake.counts["POST pods"] == 2
    wait_for(lambda: not read_nodes(zuul.kazoo), timeout=30)
    wait_for(lambda: k8s_fake.namespaces() == [], timeout=30)


def test_api_error_mid_setup_rolls_back(start, k8s_fake, zuul):
    k8s_fake.http_faults.fail("POST rolebindings", 500, {
        "kind": "Status", "code": 500, "message": "etcd unavailable"})
    start()
    _, nodes = served_by(zuul, zuul.submit(["kubernetes-namespace"]))
    # Two namespaces were made; the one of the failed attempt is gone.
    assert k8s_fake.counts["POST namespaces"] == 2
    assert k8s_fake.namespaces() == [nodes[0].external_id]
    _release(zuul, k8s_fake, nodes)


def test_api_errors_fail_the_request(start, k8s_fake, zuul):
    k8s_fake.http_faults.fail("POST serviceaccounts", 500, {
        "kind": "Status", "code": 500, "message": "boom"}, times=2)
    start(retries=2)
    done = zuul.wait_for_request(zuul.submit(["kubernetes-namespace"]),
                                 timeout=30)
    assert done.state == RequestState.FAILED
    wait_for(lambda: not read_nodes(zuul.kazoo), timeout=30)
    wait_for(lambda: k8s_fake.namespaces() == [], timeout=30)


def test_cluster_quota_exceeded(start, k8s_fake, zuul):
    k8s_fake.max_pods = 1
    start()
    _, first = served_by(zuul, zuul.submit(["pod-fedora"]))
    second = zuul.submit(["pod-fedora"])
    # Refused for quota: the pool pauses, the request waits.
    wait_for(lambda: k8s_fake.counts["POST pods"] >= 2, timeout=30)
    assert zuul.get_request(second).state != RequestState.FAILED
    zuul.finish(first)
    _, nodes = served_by(zuul, second)
    assert nodes[0].connection_type == "kubectl"
    _release(zuul, k8s_fake, nodes)


def test_leaked_namespace_cleaned_up(start, k8s_fake, zuul, statsd):
    k8s_fake.add_namespace("main-0000009999", {
        "nodepool_provider_name": "kubespray",
        "nodepool_node_id": "0000009999"})
    k8s_fake.add_namespace("main-0000008888", {
        "nodepool_provider_name": "other", "nodepool_node_id": "0000008888"})
    k8s_fake.add_namespace("unrelated")
    start()
    wait_for(lambda: "main-0000009999" not in k8s_fake.namespaces(),
             timeout=30)
    assert k8s_fake.namespaces() == ["main-0000008888", "unrelated"]
    statsd.wait_for_metric("nodepool.provider.kubespray.leaked.nodes", "c")


def test_pool_quota_pauses_then_serves(start, k8s_fake, zuul):
    start(max_servers=1)
    _, first = served_by(zuul, zuul.submit(["pod-fedora"]))
    second = zuul.submit(["kubernetes-namespace"])
    # The pool is full: no namespace is even asked for meanwhile.
    wait_for(lambda: zuul.get_request(second).state
             == RequestState.PENDING, timeout=30)
    assert k8s_fake.counts["POST namespaces"] == 1
    zuul.finish(first)
    _, nodes = served_by(zuul, second)
    assert nodes[0].connection_type == "namespace"
    _release(zuul, k8s_fake, nodes)


def test_request_that_never_fits_is_declined(launcher_factory, zuul):
    launcher_factory(CONFIG.replace(
        "max-servers: {max_servers}",
        "max-servers: {max_servers}\n        max-cores: 1"), retries=3,
        launch_timeout=30)
    done = zuul.wait_for_request(zuul.submit(["pod-extra"]), timeout=30)
    assert done.state == RequestState.FAILED
    assert done.declined_by


def test_cli_list_info_delete(start, k8s_fake, zuul, tmp_path, zk_server,
                              zk_chroot, capsys):
    start()
    _, nodes = served_by(zuul, zuul.submit(["kubernetes-namespace"]))
    node = nodes[0]
    zuul.return_nodes(nodes, state=NodeState.READY)
    path = tmp_path / "cli.yaml"
    path.write_text(zk_config(zk_server, zk_chroot) + textwrap.dedent(
        CONFIG).format(retries=3, launch_timeout=30, max_servers=10))

    def cli(*args):
        capsys.readouterr()
        status = nodepoolcmd.main(["-c", str(path)] + list(args))
        return status, capsys.readouterr().out

    status, out = cli("list", "--detail")
    assert status == 0
    [row] = table(out)[1:]
    assert row[0] == node.id and row[3] == node.external_id
    assert "redacted" in row
    assert node.connection_port["token"] not in out
    status, out = cli("info", "kubespray")
    assert status == 0
    assert table(out, "Nodes:") == [["ID", "Server ID"],
                                    [node.id, node.external_id]]
    status, out = cli("delete", "--now", node.id)
    assert status == 0
    assert node.external_id not in k8s_fake.namespaces()
    wait_for(lambda: not read_nodes(zuul.kazoo), timeout=30)


def test_tenant_limit_on_label_resources(launcher_factory, k8s_fake, zuul):
    launcher_factory(CONFIG + """
tenant-resource-limits:
  - tenant-name: tenant-1
    max-cores: 2
    gpu-vendor.example/example-gpu: 1
""", retries=3, launch_timeout=30)
    _, first = served_by(zuul, zuul.submit(["pod-extra"],
                                           tenant_name="tenant-1"))
    second = zuul.submit(["pod-extra"], tenant_name="tenant-1")
    other = zuul.submit(["pod-extra"], tenant_name="tenant-2")
    # Another tenant is served; this one's next request waits.
    _, others = served_by(zuul, other)
    assert zuul.get_request(second).state == RequestState.REQUESTED
    assert k8s_fake.counts["POST pods"] == 2
    zuul.finish(first)
    _, nodes = served_by(zuul, second)
    zuul.finish(others)
    _release(zuul, k8s_fake, nodes)


def test_record_outlives_terminating_namespace(start, k8s_fake, zuul):
    k8s_fake.namespace_finalize_delay = 1.5
    start()
    _, nodes = served_by(zuul, zuul.submit(["kubernetes-namespace"]))
    ns = nodes[0].external_id
    zuul.finish(nodes)
    wait_for(lambda: k8s_fake.counts["DELETE namespaces"] == 1, timeout=30)
    wait_for(lambda: not read_nodes(zuul.kazoo), timeout=30)
    # The record went only once the namespace was gone for good.
    assert ns not in k8s_fake.namespaces()
    assert k8s_fake.counts["GET namespaces"] >= 2
