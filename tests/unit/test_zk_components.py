# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
import json
import re
import threading

import pytest

from nodepool.version import __version__
from nodepool.zk import paths
from nodepool.zk.components import (BuilderComponent, ComponentState,
                                    LauncherComponent, PoolComponent,
                                    StatsElection)
from nodepool.zk.registry import ComponentRegistry
from tests.fixtures import zkserver
from tests.fixtures.waits import wait_for


@pytest.fixture
def registry_factory():
    registries = []

    def factory(client):
        registry = ComponentRegistry(client)
        registries.append(registry)
        return registry
    yield factory
    for registry in registries:
        registry.stop()


def raw(client, path):
    data, _ = client.kazoo.get(path)
    return data


def by_path(registry, kind):
    return {info.path: info for info in registry.all(kind)}


def test_register_writes_sorted_ephemeral_record(zk_client):
    launcher = LauncherComponent(zk_client, hostname="host1")
    path = launcher.register()
    assert re.fullmatch(r"/nodepool/components/launcher/host1\d{10}", path)
    data, stat = zk_client.kazoo.get(path)
    expected = {"hostname": "host1", "state": "stopped", "kind": "launcher",
                "version": __version__, "model_api": 0}
    assert data == json.dumps(expected, sort_keys=True).encode("utf8")
    assert stat.ephemeralOwner == zk_client.session_id
    assert launcher.state == "stopped"
    assert launcher.to_dict() == expected


def test_pool_record_keys_and_update(zk_client):
    pool = PoolComponent(zk_client, hostname="h")
    pool.register()
    pool.update(state="running", id="h-PoolWorker.p-main-abc", name="main",
                provider_name="p", supported_labels=["b", "a"],
                priority=50, paused=True)
    content = json.loads(raw(zk_client, pool.path))
    assert content == {
        "hostname": "h", "state": "running", "kind": "pool",
        "version": __version__, "model_api": 0,
        "id": "h-PoolWorker.p-main-abc", "name": "main",
        "provider_name": "p", "supported_labels": ["b", "a"],
        "priority": 50, "paused": True}
    assert raw(zk_client, pool.path) == json.dumps(
        content, sort_keys=True).encode("utf8")
    assert zk_client.kazoo.exists(pool.path).version == 1
    with pytest.raises(TypeError):
        pool.update(nonsense=1)
    with pytest.raises(ValueError):
        pool.update(state="dancing")
    pool.update(state=ComponentState.PAUSED)
    assert json.loads(raw(zk_client, pool.path))["state"] == "paused"
    assert type(pool.state) is str
    with pytest.raises(AttributeError):
        pool.state = "running"
    # Rejected updates wrote nothing.
    assert zk_client.kazoo.exists(pool.path).version == 2


def test_pool_defaults_not_shared(zk_client):
    a = PoolComponent(zk_client)
    b = PoolComponent(zk_client)
    a.supported_labels.append("x")
    assert b.supported_labels == []
    assert a.priority == 100 and a.paused is False and a.id is None


def test_update_before_register_is_kept(zk_client):
    builder = BuilderComponent(zk_client, hostname="b")
    builder.update(state="running")
    assert zk_client.kazoo.exists(paths.component_kind_path("builder")) \
        is None
    builder.register()
    assert json.loads(raw(zk_client, builder.path))["state"] == "running"


def test_update_retries_on_bad_version(zk_client, zk_factory):
    launcher = LauncherComponent(zk_client, hostname="h")
    launcher.register()
    other = zk_factory()
    other.kazoo.set(launcher.path, b'{"meddled": true}')
    launcher.update(state="running")
    content = json.loads(raw(zk_client, launcher.path))
    assert content["state"] == "running"
    assert "meddled" not in content
    assert zk_client.kazoo.exists(launcher.path).version == 2


def test_update_recreates_deleted_record(zk_client, zk_factory):
    launcher = LauncherComponent(zk_client, hostname="h")
    old = launcher.register()
    zk_factory().kazoo.delete(old)
    launcher.update(state="paused")
    assert launcher.path != old
    assert json.loads(raw(zk_client, launcher.path))["state"] == "paused"


def test_registry_sees_register_update_unregister(zk_client, zk_factory,
                                                  registry_factory):
    observer = zk_factory()
    registry = registry_factory(observer)
    assert registry.all() == []
    pool = PoolComponent(zk_client, hostname="h")
    pool.update(id="pid", supported_labels=["a"])
    pool.register()
    launcher = LauncherComponent(zk_client, hostname="h")
    launcher.register()
    wait_for(lambda: len(registry.all()) == 2)
    assert [i.kind for i in registry.all()] == ["launcher", "pool"]
    [info] = registry.pools()
    assert info.path == pool.path
    assert info.id == "pid"
    assert info.supported_labels == ("a",)
    assert info.paused is False
    assert info.missing_key is None
    with pytest.raises(AttributeError):
        info.paused = True

    pool.update(paused=True, supported_labels=["a", "b"])
    wait_for(lambda: registry.pools()[0].paused is True)
    assert registry.pools()[0].supported_labels == ("a", "b")
    assert registry.pools()[0].to_dict() == pool.to_dict()

    pool.unregister()
    wait_for(lambda: registry.pools() == [])
    assert zk_client.kazoo.exists(pool.path or "/x") is None
    assert [i.kind for i in registry.all()] == ["launcher"]
    # Unregistered components no longer write.
    pool.update(paused=False)
    assert registry.pools() == []


def test_registry_initial_sync_and_stop(zk_client, zk_factory,
                                        registry_factory):
    for host in ("a", "b"):
        BuilderComponent(zk_client, hostname=host).register()
    registry = registry_factory(zk_factory())
    # The constructor waits for the first full read.
    assert sorted(i.hostname for i in registry.all("builder")) == ["a", "b"]
    registry.stop()
    LauncherComponent(zk_client).register()
    assert registry.all("launcher") == []


def test_records_go_with_the_session(zk_factory, registry_factory):
    owner = zk_factory()
    registry = registry_factory(zk_factory())
    launcher = LauncherComponent(owner, hostname="h")
    launcher.register()
    wait_for(lambda: len(registry.all("launcher")) == 1)
    owner.disconnect()
    wait_for(lambda: registry.all("launcher") == [])


def test_reregistered_after_session_expiry(zk_client, zk_factory,
                                           registry_factory):
    registry = registry_factory(zk_factory())
    pool = PoolComponent(zk_client, hostname="h")
    pool.register()
    old_path = pool.path
    pool.update(state="running", priority=7)
    old_session = zk_client.session_id
    zkserver.expire_session(zk_client.kazoo)
    wait_for(lambda: zk_client.session_id != old_session and
             pool.path != old_path, timeout=60)
    data, stat = zk_client.kazoo.get(pool.path)
    assert stat.ephemeralOwner == zk_client.session_id
    assert json.loads(data)["priority"] == 7
    assert json.loads(data)["state"] == "running"
    assert zk_client.kazoo.exists(old_path) is None
    # The registry (on a healthy session) follows, with one record only.
    wait_for(lambda: [i.path for i in registry.pools()] == [pool.path])
    assert registry.pools()[0].priority == 7
    # Writes go to the new record.
    pool.update(priority=8)
    wait_for(lambda: registry.pools()[0].priority == 8)


def test_registry_resyncs_after_its_session_expiry(zk_client, zk_factory,
                                                   registry_factory):
    observer = zk_factory()
    registry = registry_factory(observer)
    first = LauncherComponent(zk_client, hostname="one")
    first.register()
    wait_for(lambda: len(registry.all("launcher")) == 1)
    old_session = observer.session_id
    zkserver.expire_session(observer.kazoo)
    wait_for(lambda: observer.connected and
             observer.session_id != old_session, timeout=60)
    first.unregister()
    second = LauncherComponent(zk_client, hostname="two")
    second.register()
    wait_for(lambda: [i.hostname for i in registry.all("launcher")] ==
             ["two"])
    second.update(state="running")
    wait_for(lambda: registry.all("launcher")[0].state == "running")


def test_invalid_record_is_skipped(zk_client, zk_factory, registry_factory):
    kind_path = paths.component_kind_path("pool")
    zk_client.kazoo.create(kind_path + "/bad", b"{not json",
                           makepath=True)
    zk_client.kazoo.create(kind_path + "/list", b"[1, 2]")
    zk_client.kazoo.create(kind_path + "/empty", b"")
    good = PoolComponent(zk_client, hostname="good")
    good.register()
    registry = registry_factory(zk_factory())
    assert [i.path for i in registry.pools()] == [good.path]
    # A record that becomes valid shows up, one that breaks goes away.
    zk_client.kazoo.set(kind_path + "/bad", b'{"kind": "pool"}')
    wait_for(lambda: len(registry.pools()) == 2)
    zk_client.kazoo.set(kind_path + "/bad", b"garbage")
    wait_for(lambda: len(registry.pools()) == 1)


def test_model_api(zk_client, zk_factory, registry_factory):
    registry = registry_factory(zk_factory())
    assert registry.model_api == 0
    kind_path = paths.component_kind_path("builder")
    LauncherComponent(zk_client).register()
    zk_client.kazoo.create(kind_path + "/newer",
                           json.dumps({"model_api": 3}).encode(),
                           makepath=True)
    zk_client.kazoo.create(kind_path + "/weird",
                           json.dumps({"model_api": "x"}).encode())
    wait_for(lambda: len(registry.all()) == 3)
    # Our own value caps the minimum.
    assert registry.model_api == 0
    zk_client.kazoo.create(kind_path + "/older",
                           json.dumps({"model_api": -1}).encode())
    wait_for(lambda: registry.model_api == -1)
    zk_client.kazoo.delete(kind_path + "/older")
    wait_for(lambda: registry.model_api == 0)


# Stats election -----------------------------------------------------------

class Candidate:
    """Runs one StatsElection in a thread and records its leadership."""

    def __init__(self, client, identifier):
        self.election = StatsElection(client, identifier)
        self.leading = threading.Event()
        self.terms = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _lead(self):
        self.terms += 1
        self.leading.set()
        try:
            while not self.election.wait(10):
                pass
        finally:
            self.leading.clear()

    def _run(self):
        while not self.stop.is_set():
            try:
                self.election.run(self._lead)
            except Exception:
                # Connection trouble while contending: try again.
                self.stop.wait(0.1)

    def close(self):
        self.stop.set()
        self.election.close()
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture
def candidates():
    made = []

    def factory(client, identifier):
        candidate = Candidate(client, identifier)
        made.append(candidate)
        return candidate
    yield factory
    for candidate in made:
        if candidate.thread.is_alive():
            candidate.close()


def test_default_identifier(zk_client):
    election = StatsElection(zk_client)
    assert re.fullmatch(r".+-\d+", election.identifier)
    election.close()


def test_election_one_leader_then_takeover_on_stop(zk_factory, candidates):
    first = candidates(zk_factory(), "one-1")
    wait_for(lambda: first.leading.is_set())
    second = candidates(zk_factory(), "two-2")
    wait_for(lambda: first.election.contenders() == ["one-1", "two-2"])
    assert first.election.is_leader
    assert not second.leading.is_set()
    assert not second.election.is_leader
    first.close()
    assert not first.leading.is_set()
    wait_for(lambda: second.leading.is_set())
    assert second.election.contenders() == ["two-2"]
    assert first.terms == 1 and second.terms == 1


def test_election_takeover_on_leader_session_loss(zk_factory, candidates):
    leader_client = zk_factory()
    first = candidates(leader_client, "one-1")
    wait_for(lambda: first.leading.is_set())
    second = candidates(zk_factory(), "two-2")
    wait_for(lambda: len(second.election.contenders()) == 2)
    zkserver.expire_session(leader_client.kazoo)
    wait_for(lambda: second.leading.is_set(), timeout=60)
    # The old leader noticed and went back to contending behind the new one.
    wait_for(lambda: first.terms == 1 and not first.leading.is_set())
    wait_for(lambda: second.election.contenders() == ["two-2", "one-1"],
             timeout=60)
    assert not first.leading.is_set()


def test_cancel_before_run(zk_client):
    election = StatsElection(zk_client, "x-1")
    election.cancel()
    assert election.run(lambda: pytest.fail("must not lead")) is False
    # The cancel was used up: the next run leads.
    called = []
    assert election.run(called.append, 1) is True
    assert called == [1]
    election.close()
