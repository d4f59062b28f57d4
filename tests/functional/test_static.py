# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The static driver end to end: a real ZooKeeper, the launcher in-process,
real OpenSSH servers on loopback addresses playing the hosts, and the
Zuul-like client asking for nodes.  (What every driver does is in the
contract suite, tests/contract.)"""

import os
import time

import pytest

from nodepool import driver as driver_registry
from nodepool.driver.static import StaticDriver
from nodepool.zk import paths
from nodepool.zk.models import Node, NodeState, RequestState
from nodepool.zk.nodes import NodeStore
from tests.fixtures.waits import wait_for

# 127.0.0.3 has nothing listening on the test port: an unreachable host.
UNREACHABLE = "127.0.0.3"
CONFIGURED_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIConfiguredKeyOnly"

BASE = """
labels:
  - name: static-a
  - name: static-b
  - name: static-c
providers:
  - name: static
    driver: static
    pools:
      - name: main
        node-attributes:
          rack: r1
        nodes:
{nodes}
"""

HOST_A = """
          - name: 127.0.0.1
            labels: [static-a]
            connection-port: {port}
            max-parallel-jobs: 2
            username: alice
            python-path: /usr/bin/python3
            shell-type: bash
"""

HOST_B = """
          - name: 127.0.0.2
            labels: static-b
            connection-port: {port}
            host-key-checking: false
            host-key: {key}
"""


def render(nodes, **values):
    """The config with the given host entries (format fields filled)."""
    text = BASE.replace("{nodes}", "".join(nodes))
    return text.format(key=CONFIGURED_KEY, **values)


class UnsyncedStaticDriver(StaticDriver):
    """The static driver whose providers never run the periodic full
    pass after the one at start."""

    sync_interval = 1e6


@pytest.fixture(autouse=True)
def no_periodic_sync():
    """Only the full pass at provider start: everything after it must
    come from the events (a node removed, a host's retry)."""
    driver_registry.register_driver(
        "static", "tests.functional.test_static:UnsyncedStaticDriver")
    yield
    driver_registry.register_driver(
        "static", "nodepool.driver.static:StaticDriver")


def stop_launcher(launcher):
    launcher.stop()
    launcher.join()


def rewrite_config(launcher, text):
    path = launcher.watcher.path
    with open(path, "w") as f:
        f.write(text)
    future = time.time() + 5
    os.utime(path, (future, future))


def all_nodes(zuul):
    if not zuul.kazoo.exists("/nodepool/nodes"):
        return []
    nodes = []
    for node_id in sorted(zuul.kazoo.get_children("/nodepool/nodes")):
        try:
            data, _ = zuul.kazoo.get("/nodepool/nodes/" + node_id)
        except Exception:
            continue
        if data:
            nodes.append(Node.from_bytes(data, id=node_id))
    return nodes


def ready(zuul, hostname=None, username=None):
    return [n for n in all_nodes(zuul)
            if n.state == NodeState.READY and not n.allocated_to
            and (hostname is None or n.hostname == hostname)
            and (username is None or n.username == username)]


def wait_ready(zuul, count, hostname=None, username=None, timeout=30):
    def check():
        nodes = ready(zuul, hostname, username)
        return nodes if len(nodes) == count else None
    return wait_for(check, timeout=timeout,
                    message="expected %d ready nodes of %s" % (
                        count, hostname or "any host"))


def synced(launcher):
    provider = launcher.providers.get("static")
    return provider is not None and provider.registrar.synced.is_set()


def stable_nodes(zuul, launcher):
    """Node records once the current provider finished a full pass."""
    wait_for(lambda: synced(launcher))
    return all_nodes(zuul)


# -- registration --------------------------------------------------------

def test_hosts_registered_one_node_per_slot(launcher_factory, zuul, sshd):
    launcher_factory(render([HOST_A, HOST_B], port=sshd.port))
    a_nodes = wait_ready(zuul, 2, hostname="127.0.0.1")
    b_nodes = wait_ready(zuul, 1, hostname="127.0.0.2")
    assert sorted(n.slot for n in a_nodes) == [0, 1]
    for node in a_nodes:
        assert node.provider == "static" and node.pool == "main"
        assert node.launcher == "static driver"
        assert node.type == ["static-a"]
        assert node.external_id == node.interface_ip == "127.0.0.1"
        assert node.public_ipv4 == "127.0.0.1"
        assert node.username == "alice"
        assert node.connection_port == sshd.port
        assert node.connection_type == "ssh"
        assert node.python_path == "/usr/bin/python3"
        assert node.shell_type == "bash"
        assert node.attributes == {"rack": "r1"}
        # Scanned from the real sshd.
        assert sorted(node.host_keys) == sorted(sshd.host_keys())
    (b_node,) = b_nodes
    # No host-key checking: the configured key, no scan.
    assert b_node.host_keys == [CONFIGURED_KEY]
    assert b_node.type == ["static-b"] and b_node.slot == 0
    assert b_node.username == "zuul" and b_node.python_path == "auto"


def test_multi_node_request_across_hosts(launcher_factory, zuul, sshd):
    launcher_factory(render([HOST_A, HOST_B], port=sshd.port))
    wait_ready(zuul, 3)
    nodes = zuul.run_job(["static-a", "static-b", "static-a"])
    assert [n.hostname for n in nodes] == [
        "127.0.0.1", "127.0.0.2", "127.0.0.1"]
    assert sorted([nodes[0].slot, nodes[2].slot]) == [0, 1]
    zuul.finish(nodes)
    # Every slot comes back as a new ready node.
    again = wait_ready(zuul, 3)
    assert not {n.id for n in again} & {n.id for n in nodes}


def test_request_beyond_slots_declined(launcher_factory, zuul, sshd):
    launcher = launcher_factory(render([HOST_A, HOST_B], port=sshd.port))
    wait_ready(zuul, 3)
    done = zuul.wait_for_request(zuul.submit(["static-a"] * 3))
    assert done.state == RequestState.FAILED
    worker = launcher.pool_workers[("static", "main")]
    assert done.declined_by == [worker.launcher_id]
    done = zuul.wait_for_request(zuul.submit(["static-b", "static-b"]))
    assert done.state == RequestState.FAILED
    # Within the slots: served.
    nodes = zuul.run_job(["static-a", "static-a", "static-b"])
    zuul.finish(nodes)


def test_busy_label_waits_without_starving_others(
        launcher_factory, zuul, sshd):
    launcher = launcher_factory(render([HOST_A, HOST_B], port=sshd.port))
    wait_ready(zuul, 3)
    first = zuul.run_job(["static-a", "static-a"])
    waiting = zuul.submit(["static-a"])
    pair = zuul.submit(["static-a", "static-a"])
    # Other labels keep being served while static-a is all busy.
    for _ in range(3):
        zuul.finish(zuul.run_job(["static-b"]))
    for request in (waiting, pair):
        current = zuul.get_request(request)
        assert current.state == RequestState.REQUESTED
        assert current.declined_by == []
    worker = launcher.pool_workers[("static", "main")]
    assert not worker.paused
    # Slots free up: the waiting requests are served promptly, in
    # whichever order the two handlers win the free nodes.
    zuul.finish(first)
    pending = {waiting.id, pair.id}

    def serve():
        for request_id in list(pending):
            current = zuul.get_request(request_id)
            assert current.state in (RequestState.REQUESTED,
                                     RequestState.PENDING,
                                     RequestState.FULFILLED)
            if current.state == RequestState.FULFILLED:
                zuul.finish(zuul.accept_nodes(current))
                pending.discard(request_id)
        return not pending
    wait_for(serve, timeout=20)


# -- host checks ---------------------------------------------------------

def test_unreachable_host_and_wrong_key_not_registered(
        launcher_factory, zuul, sshd):
    nodes = [HOST_B, """
          - name: {unreachable}
            labels: [static-a]
            connection-port: {port}
            timeout: 1
""", """
          - name: 127.0.0.1
            labels: [static-c]
            connection-port: {port}
            host-key: {key}
"""]
    launcher = launcher_factory(render(nodes, port=sshd.port,
                                       unreachable=UNREACHABLE))
    wait_ready(zuul, 1, hostname="127.0.0.2")
    wait_for(lambda: synced(launcher))
    assert [n.hostname for n in all_nodes(zuul)] == ["127.0.0.2"]
    # Requests for the missing hosts wait (not declined, not paused)
    # while the healthy host keeps serving.
    waiting = zuul.submit(["static-a"])
    zuul.finish(zuul.run_job(["static-b"]))
    # The used node is replaced by a fresh ready one for the same host;
    # wait for that before looking, the swap is not atomic.
    wait_ready(zuul, 1, hostname="127.0.0.2")
    current = zuul.get_request(waiting)
    assert current.state == RequestState.REQUESTED
    assert current.declined_by == []
    assert [n.hostname for n in all_nodes(zuul)
            if n.state != NodeState.DELETING] == ["127.0.0.2"]


def test_host_failing_after_use_withheld_until_it_passes(
        launcher_factory, zuul, sshd_factory):
    server = sshd_factory(addresses=("127.0.0.4",))
    host = """
          - name: 127.0.0.4
            labels: [static-c]
            connection-port: {port}
            timeout: 1
"""
    launcher_factory(render([host], port=server.port))
    (first,) = wait_ready(zuul, 1)
    nodes = zuul.run_job(["static-c"])
    assert nodes[0].id == first.id
    server.stop()
    zuul.finish(nodes)
    waiting = zuul.submit(["static-c"])
    # The used node is removed and, the host failing its check, not
    # replaced; the request waits.
    wait_for(lambda: not all_nodes(zuul), timeout=30)
    assert zuul.get_request(waiting).state == RequestState.REQUESTED
    # Back, with new host keys, on the same address and port.
    server = sshd_factory(addresses=("127.0.0.4",), port=server.port)
    done = zuul.wait_for_request(waiting, timeout=30)
    assert done.state == RequestState.FULFILLED
    (again,) = zuul.accept_nodes(done)
    assert again.id != first.id and again.slot == 0
    assert sorted(again.host_keys) == sorted(server.host_keys())
    zuul.finish([again])


# -- config changes, hold, restart -----------------------------------------

HOST_A_OTHER_USER = """
          - name: 127.0.0.1
            labels: [static-c]
            connection-port: {port}
            username: bob
"""


def test_config_changes_respect_nodes_in_use(launcher_factory, zuul, sshd):
    launcher = launcher_factory(render([HOST_A, HOST_B], port=sshd.port))
    wait_ready(zuul, 3)
    (in_use,) = zuul.run_job(["static-a"])
    (held,) = zuul.run_job(["static-b"])
    zuul.hold_nodes([held], hold_job="tenant/project/job")
    # One slot for 127.0.0.1 with an extra label, 127.0.0.2 removed, and a
    # new host (same address, other user) added.
    changed = HOST_A.replace("max-parallel-jobs: 2", "max-parallel-jobs: 1")
    changed = changed.replace("[static-a]", "[static-a, static-c]")
    rewrite_config(launcher, render([changed, HOST_A_OTHER_USER],
                                    port=sshd.port))
    wait_ready(zuul, 1, username="bob")
    nodes = stable_nodes(zuul, launcher)
    # The free node of 127.0.0.1 had to go (its only slot is in use);
    # the busy and the held node stay untouched.
    by_id = {n.id: n for n in nodes}
    assert set(by_id) == {in_use.id, held.id} | {
        n.id for n in nodes if n.username == "bob"}
    assert by_id[in_use.id].state == NodeState.IN_USE
    assert by_id[in_use.id].type == ["static-a"]
    assert by_id[held.id].state == NodeState.HOLD
    # Once released, the in-use node's slot comes back with the new
    # settings; the removed host's held node is not replaced.
    zuul.finish([in_use])
    (back,) = wait_ready(zuul, 1, username="alice")
    assert back.type == ["static-a", "static-c"] and back.slot == 0
    release_hold(zuul, held)
    wait_for(lambda: not [n for n in all_nodes(zuul)
                          if n.hostname == "127.0.0.2"])
    nodes = stable_nodes(zuul, launcher)
    assert sorted((n.username, n.slot) for n in nodes) == [
        ("alice", 0), ("bob", 0)]


def release_hold(zuul, node):
    """What ``nodepool delete`` does to a held node."""
    store = NodeStore(zuul.zk_client)
    current = store.get_node(node.id)
    store.lock_node(current, blocking=True, timeout=10)
    try:
        current.state = NodeState.DELETING
        store.store_node(current)
    finally:
        store.unlock_node(current)


def test_held_node_keeps_its_slot_until_released(
        launcher_factory, zuul, sshd):
    launcher = launcher_factory(render([HOST_A, HOST_B], port=sshd.port))
    wait_ready(zuul, 3)
    (held,) = zuul.run_job(["static-b"])
    zuul.hold_nodes([held], hold_job="tenant/project/job")
    waiting = zuul.submit(["static-b"])
    zuul.finish(zuul.run_job(["static-a"]))
    nodes = stable_nodes(zuul, launcher)
    assert [n.id for n in nodes if n.hostname == "127.0.0.2"] == [held.id]
    assert zuul.get_request(waiting).state == RequestState.REQUESTED
    release_hold(zuul, held)
    done = zuul.wait_for_request(waiting, timeout=20)
    assert done.state == RequestState.FULFILLED
    (node,) = zuul.accept_nodes(done)
    assert node.id != held.id and node.hostname == "127.0.0.2"
    zuul.finish([node])


def test_label_change_updates_free_nodes(launcher_factory, zuul, sshd):
    launcher = launcher_factory(render([HOST_A, HOST_B], port=sshd.port))
    before = wait_ready(zuul, 3)
    changed = HOST_B.replace("static-b", "static-b static-c")
    rewrite_config(launcher, render([HOST_A, changed], port=sshd.port))
    wait_for(lambda: [n.type for n in ready(zuul, "127.0.0.2")] == [
        ["static-b", "static-c"]])
    after = stable_nodes(zuul, launcher)
    # Updated in place: same records, nothing added or lost.
    assert sorted(n.id for n in after) == sorted(n.id for n in before)
    nodes = zuul.run_job(["static-c"])
    assert nodes[0].hostname == "127.0.0.2"
    zuul.finish(nodes)


def test_restart_neither_duplicates_nor_loses(launcher_factory, zuul, sshd):
    text = render([HOST_A, HOST_B], port=sshd.port)
    launcher = launcher_factory(text)
    wait_ready(zuul, 3)
    (in_use,) = zuul.run_job(["static-b"])
    before = stable_nodes(zuul, launcher)
    stop_launcher(launcher)
    launcher = launcher_factory(text)
    after = stable_nodes(zuul, launcher)
    assert sorted(n.id for n in after) == sorted(n.id for n in before)
    # And again with the provider restarted in-process by a config change
    # that leaves the hosts alone.
    rewrite_config(launcher, text.replace("rack: r1", "rack: r2"))
    wait_for(lambda: all(n.attributes == {"rack": "r2"}
                         for n in ready(zuul)) and len(ready(zuul)) == 2)
    after = stable_nodes(zuul, launcher)
    assert sorted(n.id for n in after) == sorted(n.id for n in before)
    zuul.finish([in_use])
    wait_ready(zuul, 3)
    assert len(stable_nodes(zuul, launcher)) == 3


def _static(launcher_factory, sshd, hosts):
    return launcher_factory(render(hosts, port=sshd.port))


def test_static_multiname(launcher_factory, zuul, sshd):
    """One host listed twice with different usernames serves both."""
    _static(launcher_factory, sshd, [HOST_A, HOST_A_OTHER_USER])
    wait_ready(zuul, 2, username="alice")
    (bob,) = wait_ready(zuul, 1, username="bob")
    assert bob.hostname == "127.0.0.1" and bob.type == ["static-c"]
    nodes = zuul.run_job(["static-c", "static-a"])
    assert [(n.hostname, n.username) for n in nodes] == [
        ("127.0.0.1", "bob"), ("127.0.0.1", "alice")]
    zuul.finish(nodes)


def test_static_parallel_jobs_increase_and_decrease(launcher_factory, zuul,
                                                    sshd):
    launcher = _static(launcher_factory, sshd, [HOST_B])
    (first,) = wait_ready(zuul, 1, hostname="127.0.0.2")
    more = HOST_B + "            max-parallel-jobs: 2\n"
    rewrite_config(launcher, render([more], port=sshd.port))
    nodes = wait_ready(zuul, 2, hostname="127.0.0.2")
    assert sorted(n.slot for n in nodes) == [0, 1]
    assert first.id in [n.id for n in nodes]
    rewrite_config(launcher, render([HOST_B], port=sshd.port))
    wait_for(lambda: len(all_nodes(zuul)) == 1)
    nodes = stable_nodes(zuul, launcher)
    assert [(n.slot, n.state) for n in nodes] == [(0, NodeState.READY)]


def test_static_waiting_requests_served_by_priority(launcher_factory, zuul,
                                                    sshd):
    """With the only slot busy, a normal (200) request submitted after a
    low (300) one is served first once the slot frees."""
    _static(launcher_factory, sshd, [HOST_B])
    wait_ready(zuul, 1)
    busy = zuul.run_job(["static-b"])
    low = zuul.submit(["static-b"], priority="300")
    normal = zuul.submit(["static-b"], priority="200")
    zuul.finish(busy)
    done = zuul.wait_for_request(normal)
    assert done.state == "fulfilled"
    # A pool may pick the low request up meanwhile (pending) only to give
    # it back: it settles as requested, not served by the busy slot.
    wait_for(lambda: zuul.get_request(low).state == "requested")
    nodes = zuul.accept_nodes(done)
    zuul.finish(nodes)
    done = zuul.wait_for_request(low)
    assert done.state == "fulfilled"
    zuul.finish(zuul.accept_nodes(done))


class TestPeriodicSync:
    """With the periodic full pass of the static provider."""

    @pytest.fixture
    def no_periodic_sync(self):
        """Overrides the module's: the provider's sync runs."""

    def test_static_missing_node_re_added(self, launcher_factory, zuul, sshd,
                                          zk_client):
        """A READY node record removed behind the driver's back comes back
        (as a new record for the same slot) with the periodic sync (every
        ``SYNC_FACTOR`` provider intervals: 1.2 s here, 60 s in production;
        upstream re-adds it in its equally periodic cleanup)."""
        _static(launcher_factory, sshd, [HOST_B])
        (node,) = wait_ready(zuul, 1)
        zk_client.kazoo.delete(paths.node_path(node.id), recursive=True)
        (again,) = wait_ready(zuul, 1)
        assert again.id != node.id
        assert (again.hostname, again.slot) == ("127.0.0.2", 0)
        zuul.finish(zuul.run_job(["static-b"]))


def test_static_unresolvable_host_registered(launcher_factory, zuul):
    """static_unresolvable: a host name that does not resolve, trusted
    without host-key checking, is registered without addresses."""
    host = """
          - name: nodepool-unresolvable.invalid
            labels: [static-c]
            host-key-checking: false
            host-key: {key}
"""
    launcher_factory(render([host]))
    (node,) = wait_ready(zuul, 1)
    assert node.hostname == node.interface_ip == \
        "nodepool-unresolvable.invalid"
    assert node.external_id == "nodepool-unresolvable.invalid"
    assert node.public_ipv4 is None and node.public_ipv6 is None
    assert node.host_keys == [CONFIGURED_KEY]
    assert node.connection_port == 22
    zuul.finish(zuul.run_job(["static-c"]))


def test_static_node_updated_at_startup(launcher_factory, zuul, sshd):
    """A config changed while the launcher was down updates the free
    node in place (same id) when it starts again."""
    launcher = _static(launcher_factory, sshd, [HOST_B])
    (before,) = wait_ready(zuul, 1)
    stop_launcher(launcher)
    changed = HOST_B.replace("static-b", "[static-b, static-c]") + \
        "            python-path: /usr/bin/python3\n"
    launcher = launcher_factory(render([changed], port=sshd.port))
    wait_for(lambda: [n.type for n in ready(zuul)] == [
        ["static-b", "static-c"]])
    (after,) = stable_nodes(zuul, launcher)
    assert after.id == before.id
    assert after.python_path == "/usr/bin/python3"


MULTI_PROVIDER = """
labels:
  - name: static-b
  - name: small
providers:
  - name: static
    driver: static
    pools:
      - name: main
        nodes:
          - name: 127.0.0.2
            labels: static-b
            connection-port: {port}
            host-key-checking: false
  - name: fake
    driver: test
    pools:
      - name: main
        labels:
          - name: small
"""


def test_static_and_cloud_provider_side_by_side(launcher_factory, zuul,
                                                sshd):
    """multiprovider: each label is served by the provider having it; a
    request mixing both cannot be served by any single pool."""
    launcher_factory(MULTI_PROVIDER.replace("{port}", str(sshd.port)))
    wait_ready(zuul, 1)
    (static_node,) = zuul.run_job(["static-b"])
    (cloud_node,) = zuul.run_job(["small"])
    assert (static_node.provider, static_node.hostname) == (
        "static", "127.0.0.2")
    assert cloud_node.provider == "fake"
    mixed = zuul.wait_for_request(zuul.submit(["static-b", "small"]))
    assert mixed.state == "failed"
    assert len(mixed.declined_by) == 2
    zuul.finish([static_node, cloud_node])


def test_static_assigned_ready_node_not_taken(launcher_factory, zuul, sshd,
                                              zk_client):
    """ignore_assigned_ready_nodes: a READY node allocated to another
    (still existing) request is not handed out; the new request waits,
    without being declined, until the allocation is gone."""
    launcher = _static(launcher_factory, sshd, [HOST_B])
    (node,) = wait_ready(zuul, 1)
    # A request nobody can serve, kept around (as Zuul would until it
    # notices the failure), owns the node.
    other = zuul.wait_for_request(zuul.submit(["static-a"]))
    assert other.state == "failed"
    store = NodeStore(zk_client)
    current = store.get_node(node.id, cached=False)
    store.lock_node(current, timeout=10)
    current.allocated_to = other.id
    store.store_node(current)
    store.unlock_node(current)
    wait_for(lambda: (launcher.services.node_cache.get(node.id) or
                      current).allocated_to == other.id)

    worker = launcher.pool_workers[("static", "main")]
    waiting = zuul.submit(["static-b"])
    # A few complete pool passes later: served nothing, declined nothing.
    seen = worker.passes
    wait_for(lambda: worker.passes >= seen + 3)
    request = zuul.get_request(waiting)
    assert request.state == "requested" and request.declined_by == []
    assert store.get_node(node.id, cached=False).allocated_to == other.id
    # Zuul deletes the failed request; the launcher de-allocates the node
    # and the waiting request gets it.
    zuul.delete_request(other)
    done = zuul.wait_for_request(waiting)
    assert done.state == "fulfilled" and done.nodes == [node.id]
    zuul.finish(zuul.accept_nodes(done))
