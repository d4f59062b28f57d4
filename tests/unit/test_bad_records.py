# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Malformed records: parsing, salvaging, logging once, and failing
malformed requests (the last ones against a real ZooKeeper)."""

import json
import logging
from types import SimpleNamespace

import pytest
from kazoo.recipe.lock import Lock

from nodepool.exceptions import InvalidRecordError, LockError
from nodepool.launcher.bad_records import MalformedRequestFailer
from nodepool.zk import paths
from nodepool.zk.cache import NodeCache, RequestCache
from nodepool.zk.registry import check_component_record
from nodepool.zk.invalid import InvalidRecordLog
from nodepool.zk.models import Node, NodeRequest, RequestState
from nodepool.zk.requests import RequestStore
from tests.fixtures import zkserver
from tests.fixtures.waits import wait_for

REQUEST = {"state": "requested", "state_time": 1.0, "node_types": ["a"],
           "requestor": "zuul01", "requestor_data": {"job": "j"},
           "event_id": "ev", "relative_priority": 2, "provider": None,
           "tenant_name": "t", "created_time": 1.0}


def encode(data) -> bytes:
    return json.dumps(data).encode("utf-8")


# -- parsing ------------------------------------------------------------------

@pytest.mark.parametrize("changes", [
    {"node_types": None}, {"node_types": "a"}, {"node_types": 5},
    {"requestor": ["zuul"]}, {"provider": 1}, {"event_id": {"a": 1}},
    {"tenant_name": ["t"]},
], ids=str)
def test_request_invalid_fields(changes):
    with pytest.raises(InvalidRecordError):
        NodeRequest.from_dict(dict(REQUEST, **changes))


def test_request_without_node_types_is_invalid():
    data = dict(REQUEST)
    del data["node_types"]
    with pytest.raises(InvalidRecordError, match="node_types"):
        NodeRequest.from_dict(data)
    # An explicit empty list is a (pointless) valid request.
    assert NodeRequest.from_dict(dict(REQUEST, node_types=[])).node_types \
        == []


@pytest.mark.parametrize("key", ["provider", "pool", "allocated_to",
                                 "tenant_name", "az", "launcher"])
def test_node_name_fields_must_be_strings(key):
    base = {"state": "ready", "state_time": 1.0, "type": ["a"]}
    assert Node.from_dict(dict(base, **{key: "x"})) is not None
    assert getattr(Node.from_dict(dict(base, **{key: None})), key) is None
    with pytest.raises(InvalidRecordError, match=key):
        Node.from_dict(dict(base, **{key: ["x"]}))


def test_node_with_missing_fields_reads_with_defaults():
    node = Node.from_bytes(b'{"state": "ready"}', id="0000000001")
    assert node.provider is None and node.type == []
    assert node.username == "zuul" and node.connection_port == 22


def test_huge_values_make_short_errors():
    huge = "x" * 1_000_000
    for payload in (encode(dict(REQUEST, node_types=huge)),
                    encode(dict(REQUEST, state=huge)),
                    encode(dict(REQUEST, relative_priority=huge))):
        with pytest.raises(InvalidRecordError) as info:
            NodeRequest.from_bytes(payload, id="200-0000000001")
        assert len(str(info.value)) < 300


# -- salvaging ----------------------------------------------------------------

def test_salvage_keeps_valid_fields():
    payload = encode(dict(REQUEST, node_types="a", relative_priority="x",
                          declined_by=["p1", 2], junk=1))
    request = NodeRequest.salvage(payload, "200-0000000001")
    assert request.id == "200-0000000001"
    assert request.state is None
    assert request.node_types == []
    assert request.relative_priority == 0
    assert request.declined_by == []
    assert request.requestor == "zuul01"
    assert request.requestor_data == {"job": "j"}
    assert request.event_id == "ev"
    assert request.tenant_name == "t"
    request.state = RequestState.FAILED
    again = NodeRequest.from_bytes(request.serialize(), id=request.id)
    assert again == request


@pytest.mark.parametrize("payload", [
    b"", b"{", b"[]", b'"x"', b"null", b"42", b"\xff\xfe\x00", None,
])
def test_salvage_of_no_object_is_blank(payload):
    request = NodeRequest.salvage(payload, "200-0000000001")
    assert request.to_dict() == NodeRequest("200-0000000001").to_dict()


# -- logging once -------------------------------------------------------------

def test_invalid_record_log_once_per_version(caplog):
    log = logging.getLogger("test.invalid")
    reporter = InvalidRecordLog(capacity=2)
    v1, v2 = SimpleNamespace(mzxid=1), SimpleNamespace(mzxid=2)
    with caplog.at_level(logging.DEBUG, logger="test.invalid"):
        assert reporter.report(log, "/a", v1, ValueError("bad"))
        assert not reporter.report(log, "/a", v1, ValueError("bad"))
        assert reporter.report(log, "/a", v2, ValueError("worse"))
        reporter.forget("/a")
        assert reporter.report(log, "/a", v2, ValueError("worse"))
        # Bounded: the oldest path is forgotten, and merely reported again.
        reporter.report(log, "/b", v1, ValueError("bad"))
        reporter.report(log, "/c", v1, ValueError("bad"))
        assert reporter.report(log, "/a", v2, ValueError("worse"))
        assert reporter.report(log, "/d", None, ValueError("x" * 10000))
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING]
    assert warnings[0] == "Ignoring invalid record /a: bad"
    assert len(warnings) == 7
    assert len(warnings[-1]) < 400


# -- component records --------------------------------------------------------

@pytest.mark.parametrize("content", [
    [], "x", None,
    {"kind": "pool", "id": ["x"]},
    {"kind": "pool", "supported_labels": "small"},
    {"kind": "pool", "supported_labels": [1]},
    {"kind": "pool", "priority": "1"},
    {"kind": "pool", "priority": True},
    {"kind": "pool", "paused": "no"},
    {"kind": "pool", "state": 1},
], ids=str)
def test_bad_pool_component_records(content):
    with pytest.raises(ValueError):
        check_component_record("pool", content)


def test_good_component_records():
    check_component_record("pool", {
        "kind": "pool", "id": "x", "name": "main", "provider_name": "p",
        "supported_labels": ["a"], "priority": 100, "paused": False,
        "state": "running", "hostname": "h", "version": "1",
        "model_api": 0, "unknown": [1]})
    check_component_record("pool", {"kind": "pool", "priority": None})
    # Pool keys mean nothing in another kind's record.
    check_component_record("launcher", {"supported_labels": "x"})


# -- against ZooKeeper --------------------------------------------------------

@pytest.fixture
def request_cache(zk_client):
    cache = RequestCache(zk_client).start()
    assert cache.ensure_ready(30)
    yield cache
    cache.stop()


def create_request(kazoo, payload):
    path = kazoo.create(paths.request_prefix("200"), payload,
                        sequence=True, makepath=True)
    return path.rsplit("/", 1)[1]


def test_fail_invalid_request(zk_client, writer):
    store = RequestStore(zk_client)
    request_id = create_request(writer, encode(dict(
        REQUEST, node_types="a", state="fulfilled", nodes=["0000000001"])))
    assert store.fail_invalid_request(request_id, "launcher-1")
    data, _ = writer.get(paths.request_path(request_id))
    failed = NodeRequest.from_bytes(data, id=request_id)
    assert failed.state is RequestState.FAILED
    assert failed.declined_by == ["launcher-1"]
    assert failed.nodes == []
    assert failed.requestor == "zuul01" and failed.event_id == "ev"
    # Readable now: nothing more to do.
    assert not store.fail_invalid_request(request_id, "launcher-1")
    # The requestor can delete it.
    writer.delete(paths.request_path(request_id))


def test_fail_invalid_request_leaves_valid_and_locked_ones(zk_client,
                                                           writer):
    store = RequestStore(zk_client)
    good = create_request(writer, encode(REQUEST))
    before = writer.get(paths.request_path(good))[0]
    assert not store.fail_invalid_request(good, "launcher-1")
    assert writer.get(paths.request_path(good))[0] == before
    bad = create_request(writer, b"garbage")
    lock = Lock(writer, paths.request_lock_path(bad))
    assert lock.acquire(blocking=False)
    with pytest.raises(LockError):
        store.fail_invalid_request(bad, "launcher-1")
    assert writer.get(paths.request_path(bad))[0] == b"garbage"
    lock.release()
    assert store.fail_invalid_request(bad, "launcher-1")


def test_fail_vanished_request_leaves_no_lock(zk_client, writer):
    store = RequestStore(zk_client)
    assert not store.fail_invalid_request("200-0000000099", "launcher-1")
    assert store.get_request_lock_ids() == []


def test_request_cache_sets_invalid_requests_aside(request_cache, writer,
                                                   caplog):
    caplog.set_level(logging.WARNING)
    good = create_request(writer, encode(REQUEST))
    bad = create_request(writer, b"[1]")
    empty = create_request(writer, b"")
    wait_for(lambda: len(request_cache.invalid()) == 2)
    assert request_cache.get(good) is not None
    assert set(request_cache.invalid()) == {(bad,), (empty,)}
    assert "not list" in request_cache.invalid()[(bad,)].reason
    # A resync (here after the cache's session expired) reads everything
    # again without logging it again.
    before = request_cache.fetch_count
    zkserver.expire_session(request_cache.client.kazoo)
    wait_for(lambda: request_cache.fetch_count >= before + 3)
    # Events are applied in order: once a later record shows, the replay
    # is done.
    marker = create_request(writer, encode(REQUEST))
    wait_for(lambda: request_cache.get(marker))
    path = paths.request_path(bad)
    assert sum(path in r.getMessage() for r in caplog.records) == 1
    # Repaired or deleted, they leave the set.
    writer.set(path, encode(REQUEST))
    writer.delete(paths.request_path(empty))
    wait_for(lambda: request_cache.invalid() == {})
    assert request_cache.get(bad) is not None
    # Broken again: logged again (a new version).
    writer.set(path, b"{")
    wait_for(lambda: request_cache.invalid())
    assert request_cache.get(bad) is None
    assert sum(path in r.getMessage() for r in caplog.records) == 2


def test_node_cache_ids_include_unreadable_nodes(zk_client, writer):
    cache = NodeCache(zk_client).start()
    try:
        assert cache.ensure_ready(30)
        bad = writer.create(paths.NODE_ROOT + "/", b"{",
                            sequence=True, makepath=True).rsplit("/", 1)[1]
        empty = writer.create(paths.NODE_ROOT + "/", b"",
                              sequence=True).rsplit("/", 1)[1]
        good = writer.create(paths.NODE_ROOT + "/",
                             b'{"state": "ready"}',
                             sequence=True).rsplit("/", 1)[1]
        wait_for(lambda: cache.get(good) and cache.invalid())
        assert sorted(cache.ids()) == sorted([bad, good])
        assert empty not in cache.ids()  # a lock skeleton, not a node
        assert [n.id for n in cache.values()] == [good]
    finally:
        cache.stop()


def test_malformed_request_failer(zk_client, writer, request_cache):
    services = SimpleNamespace(requests=RequestStore(zk_client),
                               request_cache=request_cache)
    failer = MalformedRequestFailer(services, "launcher-1")
    bad = create_request(writer, b"\xff")
    held = create_request(writer, b"[]")
    lock = Lock(writer, paths.request_lock_path(held))
    assert lock.acquire(blocking=False)
    wait_for(lambda: len(request_cache.invalid()) == 2)
    assert failer.run() == 1
    wait_for(lambda: request_cache.get(bad) is not None)
    assert request_cache.get(bad).state is RequestState.FAILED
    # The held one waits for its lock; nothing is done twice.
    assert failer.run() == 0
    assert writer.get(paths.request_path(held))[0] == b"[]"
    lock.release()
    assert failer.run() == 1
    wait_for(lambda: request_cache.invalid() == {})
    assert request_cache.get(held).state is RequestState.FAILED
    assert failer.run() == 0
