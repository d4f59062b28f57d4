# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Tree caches against a real ZooKeeper, with records written by a second
client as Zuul or another launcher would."""

import json
import logging
import threading
import time

from kazoo.protocol.states import EventType, KazooState, WatchedEvent
from kazoo.recipe.lock import Lock
from kazoo.security import OPEN_ACL_UNSAFE, make_digest_acl

from nodepool.zk.cache import ImageCache, NodeCache, RequestCache
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.models import Node, NodeState
from nodepool.zk.nodes import NodeStore
from tests.fixtures import zkserver
from tests.fixtures.waits import wait_for


def node_json(state="ready", **extra):
    data = {"state": state, "state_time": time.time(), "type": ["label1"],
            "provider": "fake", "pool": "main"}
    data.update(extra)
    return json.dumps(data).encode()


def make_node(kazoo, state="ready", **extra):
    path = kazoo.create("/nodepool/nodes/", node_json(state, **extra),
                        sequence=True, makepath=True)
    return path.rsplit("/", 1)[1]


def test_nodes_created_changed_deleted(node_cache, writer):
    node_id = make_node(writer, comment="one")
    node = wait_for(lambda: node_cache.get(node_id))
    assert node.id == node_id and node.comment == "one"
    writer.set("/nodepool/nodes/" + node_id, node_json(comment="two"))
    wait_for(lambda: node.comment == "two")  # updated in place
    assert node_cache.get(node_id) is node
    writer.delete("/nodepool/nodes/" + node_id, recursive=True)
    wait_for(lambda: node_cache.get(node_id) is None)
    assert node_cache.values() == []


def test_updates_applied_in_order_never_older(node_cache, writer):
    node_id = make_node(writer, comment="0")
    wait_for(lambda: node_cache.get(node_id))
    seen = []
    node_cache.add_listener(
        lambda key, obj, etype: obj is not None and seen.append(
            (obj.stat.mzxid, obj.comment)))
    for i in range(1, 101):
        writer.set("/nodepool/nodes/" + node_id, node_json(comment=str(i)))
    wait_for(lambda: node_cache.get(node_id).comment == "100")
    zxids = [z for z, _ in seen]
    assert zxids == sorted(zxids)


class PlaybackGate:
    """A listener holding the playback thread until opened, so that a
    test sees what the cache shows before any watch event is applied."""

    def __init__(self):
        self.opened = threading.Event()
        self.seen = []

    def __call__(self, key, obj, event_type):
        self.opened.wait(30)
        self.seen.append((key, obj.state if obj is not None else None))


def test_own_writes_seen_before_their_events(node_cache, zk_client, writer):
    gate = PlaybackGate()
    node_cache.add_listener(gate)
    store = NodeStore(zk_client, cache=node_cache)
    try:
        blocker = make_node(writer)  # holds the playback thread
        node = Node()
        node.state = NodeState.BUILDING
        node.type = ["label1"]
        store.store_node(node)
        cached = node_cache.get(node.id)
        assert cached is not None and cached is not node
        assert cached.state == NodeState.BUILDING
        node.state = NodeState.READY
        store.store_node(node)
        assert cached.state == NodeState.READY  # updated in place
        store.delete_node(node)
        assert node_cache.get(node.id) is None
    finally:
        gate.opened.set()
    # Its queued events (created, changed twice, deleted) never bring the
    # deleted node back; a later node shows they were all played.
    marker = make_node(writer)
    wait_for(lambda: node_cache.get(marker))
    assert node_cache.get(node.id) is None
    assert all(key != (node.id,) for key, _ in gate.seen)
    assert {n.id for n in node_cache.values()} == {blocker, marker}


def test_lock_traffic_causes_no_fetches(node_cache, writer):
    ids = [make_node(writer) for _ in range(5)]
    wait_for(lambda: all(node_cache.get(i) for i in ids))
    before = node_cache.fetch_count
    for _ in range(10):
        for node_id in ids:
            lock = Lock(writer, "/nodepool/nodes/%s/lock" % node_id)
            assert lock.acquire(blocking=False)
            wait_for(lambda: node_cache.get(node_id).lock_contenders)
            lock.release()
            wait_for(lambda: not node_cache.get(node_id).lock_contenders)
    assert node_cache.fetch_count == before


def test_lock_contenders_tracked(node_cache, writer):
    node_id = make_node(writer)
    node = wait_for(lambda: node_cache.get(node_id))
    lock = Lock(writer, "/nodepool/nodes/%s/lock" % node_id)
    lock.acquire()
    wait_for(lambda: len(node.lock_contenders) == 1)
    (contender,) = node.lock_contenders
    assert "__lock__" in contender
    lock.release()
    wait_for(lambda: not node.lock_contenders)


def test_lock_listeners_hear_lock_and_unlock(node_cache, writer):
    node_id = make_node(writer)
    wait_for(lambda: node_cache.get(node_id))
    heard = []
    node_cache.add_lock_listener(
        lambda node, contender, locked: heard.append((node.id, locked)))
    plain = []
    node_cache.add_listener(lambda *args: plain.append(args))
    lock = Lock(writer, "/nodepool/nodes/%s/lock" % node_id)
    lock.acquire()
    wait_for(lambda: heard == [(node_id, True)])
    lock.release()
    wait_for(lambda: heard == [(node_id, True), (node_id, False)])
    # Lock traffic is not a data change.
    assert plain == []


def test_initial_sync_of_existing_tree(zk_client, writer):
    ids = [make_node(writer) for _ in range(30)]
    locks = [Lock(writer, "/nodepool/nodes/%s/lock" % i) for i in ids[:10]]
    for lock in locks:
        lock.acquire()
    cache = NodeCache(zk_client).start()
    try:
        assert cache.ensure_ready(30)
        assert sorted(cache.ids()) == sorted(ids)
        for node_id in ids[:10]:
            assert len(cache.get(node_id).lock_contenders) == 1
        for node_id in ids[10:]:
            assert not cache.get(node_id).lock_contenders
        # One read per record plus an existence check per lock contender.
        assert cache.fetch_count == len(ids) + len(locks)
    finally:
        cache.stop()


def test_invalid_records_skipped_cache_keeps_serving(node_cache, writer):
    bad_json = writer.create("/nodepool/nodes/", b"{not json",
                             sequence=True, makepath=True).rsplit("/", 1)[1]
    bad_state = make_node(writer, state="bogus")
    good = make_node(writer)
    wait_for(lambda: node_cache.get(good))
    assert node_cache.get(bad_json) is None
    assert node_cache.get(bad_state) is None
    # Once repaired, the record shows up.
    writer.set("/nodepool/nodes/" + bad_json, node_json())
    wait_for(lambda: node_cache.get(bad_json))
    # A valid record turned invalid leaves the cache.
    writer.set("/nodepool/nodes/" + good, b"[1, 2]")
    wait_for(lambda: node_cache.get(good) is None)
    assert node_cache._event_thread.is_alive()
    assert node_cache._playback_thread.is_alive()


def test_empty_node_not_an_object(node_cache, writer):
    node_id = writer.create("/nodepool/nodes/", b"",
                            sequence=True, makepath=True).rsplit("/", 1)[1]
    marker = make_node(writer)
    wait_for(lambda: node_cache.get(marker))
    assert node_cache.get(node_id) is None


def test_record_gone_before_its_read_is_no_invalid_record(
        zk_client, writer, caplog):
    """A record created (or changed) and deleted again before the cache
    read it: the read finds nothing, which is no record rather than a
    record without data (no "Ignoring invalid record" warning)."""
    cache = RequestCache(zk_client).start()
    try:
        assert cache.ensure_ready(30)
        path = "/nodepool/requests/200-0000000001"
        # The read the event thread would have sent, after the delete.
        gone = zk_client.kazoo.get_async(path)
        with caplog.at_level(logging.WARNING):
            for kind in (EventType.CREATED, EventType.CHANGED):
                cache._play(WatchedEvent(kind, None, path), gone,
                            ("200-0000000001",), True)
        assert cache.get("200-0000000001") is None
        assert not cache.invalid()
        assert "invalid" not in caplog.text
    finally:
        cache.stop()


def test_locked_object_not_overwritten(node_cache, writer):
    node_id = make_node(writer, comment="mine")
    node = wait_for(lambda: node_cache.get(node_id))
    node.lock = object()  # as if this process held the node's lock
    writer.set("/nodepool/nodes/" + node_id, node_json(comment="theirs"))
    marker = make_node(writer)
    wait_for(lambda: node_cache.get(marker))
    assert node.comment == "mine"
    node.lock = None
    writer.set("/nodepool/nodes/" + node_id, node_json(comment="later"))
    wait_for(lambda: node.comment == "later")


def test_resync_after_session_loss(zk_client, writer):
    keep = make_node(writer)
    gone = make_node(writer)
    cache = NodeCache(zk_client).start()
    try:
        assert cache.ensure_ready(30)
        assert cache.get(gone)
        lost = threading.Event()
        zk_client.add_session_listener(lost.set)
        zkserver.expire_session(zk_client.kazoo)
        # Change the tree while the cache's client is between sessions.
        writer.delete("/nodepool/nodes/" + gone)
        new = make_node(writer)
        assert lost.wait(30)
        wait_for(lambda: cache.ready and cache.get(new)
                 and cache.get(gone) is None)
        assert cache.get(keep)
        # The watch works on the new session.
        later = make_node(writer)
        wait_for(lambda: cache.get(later))
    finally:
        cache.stop()


def test_late_connected_transition_walks_no_second_time(zk_client, writer):
    """The client's CONNECTED transition may reach a cache started right
    after connecting only once the cache walked the tree: no second walk
    for the same connection."""
    make_node(writer)
    cache = NodeCache(zk_client).start()
    try:
        assert cache.ensure_ready(30)
        walked = cache.list_count
        assert walked == 2  # the root, one lock directory
        cache._on_state(KazooState.CONNECTED)  # as delivered late
        # Events are handled in order: once this node is cached, the
        # transition was dealt with.
        node_id = make_node(writer)
        wait_for(lambda: cache.get(node_id))
        assert cache.list_count == walked
        assert zk_client.connection_count == 1
    finally:
        cache.stop()


def test_failed_walk_is_retried_without_a_thread(zk_client, writer, caplog):
    """A walk that fails (here: no permission to list the tree) is tried
    again by the cache's own event thread, with no helper thread."""
    writer.add_auth("digest", "owner:secret")
    acl = make_digest_acl("owner", "secret", all=True)
    writer.ensure_path("/nodepool")
    writer.create("/nodepool/nodes", acl=[acl])
    before = set(threading.enumerate())
    cache = NodeCache(zk_client)
    seen = set()

    def failed_twice():
        seen.update(set(threading.enumerate()) - before)
        return len([r for r in caplog.records
                    if "Re-synchronisation failed" in r.getMessage()]) >= 2

    try:
        with caplog.at_level(logging.ERROR, logger="nodepool.zk.cache"):
            cache.start()
            wait_for(failed_twice)
        assert not cache.ready
        assert seen <= {cache._event_thread, cache._playback_thread}
        writer.set_acls("/nodepool/nodes", [OPEN_ACL_UNSAFE[0]])
        assert cache.ensure_ready(30)
        node_id = make_node(writer)
        wait_for(lambda: cache.get(node_id))
    finally:
        cache.stop()
        # The chroot's removal must be able to list it.
        writer.set_acls("/nodepool/nodes", [OPEN_ACL_UNSAFE[0]])


def test_zookeeper_restart(own_zk_server):
    own_zk_server.start()
    client = ZooKeeperClient(own_zk_server.hosts, timeout=30)
    client.connect()
    writer = ZooKeeperClient(own_zk_server.hosts, timeout=30)
    writer.connect()
    cache = NodeCache(client).start()
    try:
        assert cache.ensure_ready(30)
        first = make_node(writer.kazoo)
        wait_for(lambda: cache.get(first))
        own_zk_server.stop()
        wait_for(lambda: not client.connected)
        own_zk_server.start()
        wait_for(lambda: client.connected and writer.connected, timeout=60)
        second = make_node(writer.kazoo)
        wait_for(lambda: cache.get(second), timeout=30)
        writer.kazoo.delete("/nodepool/nodes/" + first)
        wait_for(lambda: cache.get(first) is None)
    finally:
        cache.stop()
        client.disconnect()
        writer.disconnect()


def test_many_nodes_from_concurrent_writers(zk_client, zk_factory):
    cache = NodeCache(zk_client).start()
    assert cache.ensure_ready(30)
    writers = [zk_factory(tls=False).kazoo for _ in range(3)]
    writers[0].ensure_path("/nodepool/nodes")
    made = []

    def write(kazoo):
        results = [kazoo.create_async("/nodepool/nodes/", node_json(),
                                      sequence=True) for _ in range(200)]
        made.extend(r.get().rsplit("/", 1)[1] for r in results)
    threads = [threading.Thread(target=write, args=(w,)) for w in writers]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_for(lambda: len(cache.ids()) == 600, timeout=60)
        assert sorted(cache.ids()) == sorted(made)
    finally:
        cache.stop()


def test_changes_within_the_read_interval_share_one_request(zk_client,
                                                            writer):
    """A change after a quiet spell is read at once; changes that arrive
    within the read interval of the last batch wait for it and then go
    out together, in one request.  A new record is read at once, and
    takes the changes waiting along."""
    class Clock:
        now = 100.0

        @classmethod
        def monotonic(cls):
            return cls.now

    def comments(ids):
        return [getattr(cache.get(i), "comment", None) for i in ids]
    cache = NodeCache(zk_client, clock=Clock.monotonic,
                      read_interval=1.0).start()
    try:
        assert cache.ensure_ready(30)
        ids = [make_node(writer, comment="new") for _ in range(5)]
        wait_for(lambda: comments(ids) == ["new"] * 5)  # clock never moved
        before = cache.reader.requests
        for node_id in ids:
            writer.set("/nodepool/nodes/" + node_id, node_json(comment="a"))
        wait_for(lambda: cache.reader.pending == 5)
        assert comments(ids) == ["new"] * 5
        Clock.now += 1.0
        wait_for(lambda: comments(ids) == ["a"] * 5)
        assert cache.reader.requests == before + 1

        Clock.now += 60.0  # quiet: the next change is read at once
        writer.set("/nodepool/nodes/" + ids[0], node_json(comment="b"))
        wait_for(lambda: comments(ids)[0] == "b")
        assert cache.reader.requests == before + 2

        writer.set("/nodepool/nodes/" + ids[1], node_json(comment="b"))
        wait_for(lambda: cache.reader.pending == 1)
        last = make_node(writer, comment="new")
        wait_for(lambda: comments(ids[:2] + [last]) == ["b", "b", "new"])
        assert cache.reader.requests == before + 3
    finally:
        cache.stop()


def test_request_cache_walk_lists_the_root_only(zk_client, writer):
    """Requests are leaves: the initial sync lists the request root, not
    each request (1,000 pending requests were 1,000 listings)."""
    for _ in range(5):
        writer.create("/nodepool/requests/200-", json.dumps(
            {"state": "requested", "node_types": ["a"]}).encode(),
            sequence=True, makepath=True)
    cache = RequestCache(zk_client).start()
    try:
        assert cache.ensure_ready(30)
        assert len(cache.ids()) == 5
        assert cache.list_count == 1
    finally:
        cache.stop()


def test_request_cache(zk_client, writer):
    cache = RequestCache(zk_client).start()
    try:
        assert cache.ensure_ready(30)
        path = writer.create(
            "/nodepool/requests/200-", json.dumps(
                {"state": "requested", "node_types": ["a", "b"],
                 "requestor": "zuul", "relative_priority": 3}).encode(),
            sequence=True, makepath=True)
        request_id = path.rsplit("/", 1)[1]
        request = wait_for(lambda: cache.get(request_id))
        assert request.node_types == ["a", "b"]
        before = cache.fetch_count
        # Request locks live outside the request tree.
        lock = Lock(writer, "/nodepool/requests-lock/" + request_id)
        lock.acquire()
        lock.release()
        writer.delete(path)
        wait_for(lambda: cache.get(request_id) is None)
        assert cache.fetch_count == before
    finally:
        cache.stop()


def test_image_cache(zk_client, writer):
    cache = ImageCache(zk_client).start()
    try:
        assert cache.ensure_ready(30)
        base = "/nodepool/images/ubuntu"
        writer.ensure_path(base)
        image = wait_for(lambda: cache.get_image("ubuntu"))
        assert image.paused is False
        writer.create(base + "/pause")
        wait_for(lambda: image.paused)
        writer.delete(base + "/pause")
        wait_for(lambda: not image.paused)

        build_lock = Lock(writer, base + "/builds/lock")
        build_lock.acquire()
        build = "0123456789abcdef0123456789abcdef"
        writer.create("%s/builds/%s" % (base, build), json.dumps(
            {"state": "ready", "state_time": time.time(),
             "formats": "qcow2,raw"}).encode())
        wait_for(lambda: cache.get_build("ubuntu", build))
        uploads = "%s/builds/%s/providers/fake/images" % (base, build)
        upload_lock = Lock(writer, uploads + "/lock")
        upload_lock.acquire()
        upload_path = writer.create(uploads + "/", json.dumps(
            {"state": "ready", "state_time": time.time(),
             "external_id": "ami-1"}).encode(), sequence=True)
        upload_id = upload_path.rsplit("/", 1)[1]
        upload = wait_for(
            lambda: cache.get_upload("ubuntu", build, "fake", upload_id))
        assert upload.external_id == "ami-1"
        assert cache.uploads("ubuntu", provider="fake") == [upload]
        assert cache.builds("ubuntu") == [cache.get_build("ubuntu", build)]
        before = cache.fetch_count
        upload_lock.release()
        build_lock.release()
        number_lock = Lock(writer, upload_path + "/lock")
        number_lock.acquire()
        number_lock.release()
        writer.create(base + "/request-build")
        writer.delete(base, recursive=True)
        wait_for(lambda: not cache.images() and not cache.builds()
                 and not cache.uploads())
        assert cache.fetch_count == before
    finally:
        cache.stop()


def test_cache_queue_size_warning_rate_limited(zk_client, caplog):
    """A queue above QUEUE_WARNING_SIZE is logged at most once per
    QUEUE_WARNING_INTERVAL per queue, starting with the first time."""
    import queue
    from nodepool.zk import cache as cache_mod

    class Clock:
        now = 5.0  # shortly after boot

        @classmethod
        def monotonic(cls):
            return cls.now
    cache = cache_mod.NodeCache(zk_client, clock=Clock.monotonic,
                                queue_warning_size=3)   # never started
    full = queue.Queue()
    for item in range(4):
        full.put(item)
    small = queue.Queue()
    small.put(1)

    def warnings():
        return [r.getMessage() for r in caplog.records
                if r.levelname == "WARNING" and "queue has" in
                r.getMessage()]
    with caplog.at_level("WARNING"):
        cache._check_queue("event", small)
        assert warnings() == []
        cache._check_queue("event", full)
        assert warnings() == ["event queue has 4 entries"]
        Clock.now += 30
        cache._check_queue("event", full)
        cache._check_queue("playback", full)
        assert warnings() == ["event queue has 4 entries",
                              "playback queue has 4 entries"]
        Clock.now += cache_mod.QUEUE_WARNING_INTERVAL
        cache._check_queue("event", full)
        assert warnings()[-1] == "event queue has 4 entries"
        assert len(warnings()) == 3
