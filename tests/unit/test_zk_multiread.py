# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Batched reads (ZooKeeper's multiRead) against a real server."""

import pytest
from kazoo.exceptions import ConnectionClosedError, NoNodeError
from kazoo.recipe.lock import Lock

from nodepool.zk.cache import NodeCache
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.multiread import BatchReader


@pytest.fixture
def tree(zk_client):
    kazoo = zk_client.kazoo
    kazoo.create("/a", b"alpha")
    kazoo.create("/dir/x", b"", makepath=True)
    kazoo.create("/dir/y", b"")
    kazoo.set("/a", b"alpha2")
    return kazoo


def test_one_request_answers_every_read_in_order(zk_client, tree):
    reader = BatchReader(zk_client.kazoo)
    results = [reader.get("/a"), reader.get("/missing"),
               reader.get_children("/dir"), reader.get_children("/gone"),
               reader.get_children("/"), reader.get("/dir/x")]
    reader.flush()
    assert reader.requests == 1
    data, stat = results[0].get()
    assert data == b"alpha2" and stat.version == 1
    with pytest.raises(NoNodeError):
        results[1].get()
    assert sorted(results[2].get()) == ["x", "y"]
    with pytest.raises(NoNodeError):
        results[3].get()
    # Paths are relative to the client's chroot, like kazoo's own.
    assert sorted(results[4].get()) == ["a", "dir"]
    assert results[5].get()[0] == b""
    # Each error is its own: the failed reads did not fail the others.
    assert results[0].get()[0] == b"alpha2"


def test_reads_split_at_the_limit_and_a_lone_read_goes_plain(
        zk_client, tree):
    reader = BatchReader(zk_client.kazoo, limit=3)
    results = [reader.get("/a") for _ in range(7)]
    assert reader.requests == 2  # two full batches went out by themselves
    assert not results[6]._batch.result.ready()  # waits for flush()
    reader.flush()
    assert reader.requests == 3
    assert all(r.get()[0] == b"alpha2" for r in results)
    missing = reader.get("/missing")
    reader.flush()
    with pytest.raises(NoNodeError):
        missing.get()
    reader.flush()  # nothing collected: nothing sent
    assert reader.requests == 4


def test_a_failed_request_fails_each_read(zk_server, zk_chroot):
    client = ZooKeeperClient(zk_server.plain_hosts + zk_chroot)
    client.connect()
    client.disconnect()
    reader = BatchReader(client.kazoo)
    results = [reader.get("/a"), reader.get_children("/")]
    reader.flush()
    for result in results:
        with pytest.raises(ConnectionClosedError):
            result.get()


def test_initial_sync_reads_in_batches(zk_client, zk_factory):
    writer = zk_factory(tls=False).kazoo
    ids = []
    for _ in range(300):
        path = writer.create("/nodepool/nodes/", b'{"state": "ready"}',
                             sequence=True, makepath=True)
        ids.append(path.rsplit("/", 1)[1])
    locked = Lock(writer, "/nodepool/nodes/%s/lock" % ids[0])
    assert locked.acquire(timeout=10)
    cache = NodeCache(zk_client).start()
    try:
        assert cache.ensure_ready(30)
        assert sorted(cache.ids()) == sorted(ids)
        assert len(cache.get(ids[0]).lock_contenders) == 1
        # The root and 300 lock directories listed, 300 records read and
        # one contender checked (kazoo's exists, not batched): the root
        # alone, then batches of 128, 128 and 44 for each level.
        assert cache.list_count == 301 and cache.fetch_count == 301
        assert cache.reader.requests == 7
    finally:
        cache.stop()


def test_walk_lists_level_by_level(zk_client, tree):
    """Parents come before children; ``listing_paths`` decides where to
    look below a path (nowhere below /a, a leaf here), and a path that is
    not there is skipped."""
    reader = BatchReader(zk_client.kazoo, limit=2)

    special = {"/a": (), "/dir": ("/dir", "/dir/missing")}

    def listing_paths(path):
        return special.get(path, (path,))

    found, listings = reader.walk("/", listing_paths)
    assert found[:2] == ["/a", "/dir"]
    assert sorted(found[2:]) == ["/dir/x", "/dir/y"]
    # /, then /dir and /dir/missing, then /dir/x and /dir/y.
    assert listings == 5
    assert reader.requests == 3
