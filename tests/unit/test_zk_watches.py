# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Persistent watches against a real ZooKeeper.

Ordering trick used throughout: notifications reach a client in the order
of the changes, so after a last "sentinel" change has been seen, every
event of the earlier changes has been seen too.  Comparing the full event
list then proves that nothing was lost, duplicated or added.
"""

import re
import threading
from collections import namedtuple

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionClosedError, NoWatcherError
from kazoo.protocol.serialization import int_struct, write_string
from kazoo.protocol.states import EventType, KazooState, WatchedEvent

from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.watches import (
    AddWatch,
    RemoveWatches,
    add_persistent_watch,
    remove_persistent_watch,
)
from tests.fixtures import zkserver
from tests.fixtures.tcpproxy import TCPProxy
from tests.fixtures.waits import wait_for

CREATED, DELETED = EventType.CREATED, EventType.DELETED
CHANGED, CHILD = EventType.CHANGED, EventType.CHILD


class Recorder:
    """A watch callback that records ``(type, path)`` of every event."""

    def __init__(self):
        self.events = []
        self.raw = []
        self._lock = threading.Lock()

    def __call__(self, event):
        with self._lock:
            self.raw.append(event)
            self.events.append((event.type, event.path))

    def wait_for(self, expected, timeout=30):
        """Wait until ``expected`` arrived, then require exactly that."""
        wait_for(lambda: len(self.events) >= len(expected), timeout,
                 message="got only %r, want %r" % (self.events, expected))
        assert self.events == expected


class _CheckWatches(namedtuple("CheckWatches", "path watcher_type")):
    # ZooKeeper's checkWatches (opcode 17): NoWatcher unless the connection
    # has a watch on the path.  Type 3 ("any") also counts one-shot watches,
    # so tests using it keep those off the path.
    type = 17

    def serialize(self):
        return write_string(self.path) + int_struct.pack(self.watcher_type)

    @classmethod
    def deserialize(cls, buffer, offset):
        return True


def server_has_watch(kazoo, path):
    result = kazoo.handler.async_result()
    kazoo._call(_CheckWatches(kazoo.chroot + path, 3), result)
    try:
        return result.get(timeout=10)
    except NoWatcherError:
        return False


def server_version(host, port):
    answer = zkserver.four_letter(host, port, "srvr")
    return tuple(int(x) for x in re.search(
        r"version: (\d+)\.(\d+)", answer).groups())


def drop_connection(kazoo, proxy):
    """Cut kazoo's connection, which runs through ``proxy``; kazoo
    reconnects through it in the same session.  The server forgets the
    connection's watches just as after a network failure."""
    suspended = threading.Event()

    def listener(state):
        if state == KazooState.SUSPENDED:
            suspended.set()
            return True  # remove this listener
    kazoo.add_listener(listener)
    assert proxy.drop() == 1
    assert suspended.wait(30)


@pytest.fixture
def proxied(zk_server, zk_chroot):
    """``(client, proxy)``: a connected TLS client on the test's chroot
    whose connection runs through a :class:`TCPProxy`."""
    with TCPProxy((zk_server.host, zk_server.secure_port)) as proxy:
        client = ZooKeeperClient(proxy.hosts + zk_chroot,
                                 **zk_server.tls_args())
        client.connect()
        try:
            yield client, proxy
        finally:
            client.disconnect()


@pytest.fixture
def raw_clients():
    """Plain KazooClients with any hosts string (e.g. another chroot)."""
    clients = []

    def factory(hosts):
        client = KazooClient(hosts=hosts)
        client.start(timeout=30)
        clients.append(client)
        return client
    yield factory
    for client in clients:
        client.stop()
        client.close()


def test_request_serialization():
    assert AddWatch("/a", 1).serialize() == \
        b"\x00\x00\x00\x02/a\x00\x00\x00\x01"
    assert RemoveWatches("/a/b", 4).serialize() == \
        b"\x00\x00\x00\x04/a/b\x00\x00\x00\x04"
    assert (AddWatch.type, RemoveWatches.type) == (106, 18)


@pytest.mark.parametrize("tls", [True, False])
def test_recursive_watch_sees_root_and_descendants(zk_factory, tls):
    kazoo = zk_factory(tls=tls).kazoo
    writer = zk_factory(tls=not tls).kazoo
    events = Recorder()
    add_persistent_watch(kazoo, "/a", events)  # /a does not exist yet
    writer.create("/a")
    writer.create("/a/b/c", b"1", makepath=True)
    writer.set("/a/b/c", b"2")
    writer.create("/unwatched")
    writer.delete("/a/b", recursive=True)
    writer.set("/a", b"x")
    writer.delete("/a")
    writer.create("/a")  # sentinel
    events.wait_for([
        (CREATED, "/a"), (CREATED, "/a/b"), (CREATED, "/a/b/c"),
        (CHANGED, "/a/b/c"), (DELETED, "/a/b/c"), (DELETED, "/a/b"),
        (CHANGED, "/a"), (DELETED, "/a"), (CREATED, "/a")])
    event = events.raw[0]
    assert isinstance(event, WatchedEvent)
    assert event.state == "CONNECTED"


def test_many_events_none_lost_in_order(zk_factory):
    kazoo = zk_factory().kazoo
    writer = zk_factory(tls=False).kazoo
    events = Recorder()
    add_persistent_watch(kazoo, "/many", events)
    writer.create("/many")
    expected = [(CREATED, "/many")]
    for i in range(100):
        writer.create("/many/n%03d" % i)
        writer.set("/many", str(i).encode())
        expected += [(CREATED, "/many/n%03d" % i), (CHANGED, "/many")]
    events.wait_for(expected)
    assert len(expected) == 201


def test_non_recursive_watch(zk_factory):
    kazoo = zk_factory().kazoo
    writer = zk_factory().kazoo
    events = Recorder()
    add_persistent_watch(kazoo, "/p", events, recursive=False)
    writer.create("/p")
    writer.create("/p/child")
    writer.set("/p/child", b"not seen")
    writer.create("/p/child/grandchild")  # not seen either
    writer.set("/p", b"1")
    writer.delete("/p/child", recursive=True)
    writer.delete("/p")
    writer.create("/p")  # sentinel
    events.wait_for([
        (CREATED, "/p"), (CHILD, "/p"), (CHANGED, "/p"), (CHILD, "/p"),
        (DELETED, "/p"), (CREATED, "/p")])


def test_two_callbacks_and_two_paths(zk_client):
    kazoo = zk_client.kazoo
    first, second, other = Recorder(), Recorder(), Recorder()
    add_persistent_watch(kazoo, "/x", first)
    add_persistent_watch(kazoo, "/x", first)  # idempotent
    add_persistent_watch(kazoo, "/x/", second)  # same path
    add_persistent_watch(kazoo, "/y", other)
    kazoo.create("/x")
    kazoo.create("/y")
    kazoo.create("/x/z")
    kazoo.set("/y", b"sentinel")
    other.wait_for([(CREATED, "/y"), (CHANGED, "/y")])
    first.wait_for([(CREATED, "/x"), (CREATED, "/x/z")])
    second.wait_for([(CREATED, "/x"), (CREATED, "/x/z")])
    # Added twice, but registered once: one removal ends it.
    remove_persistent_watch(kazoo, "/x", first)
    kazoo.set("/x", b"1")
    second.wait_for([(CREATED, "/x"), (CREATED, "/x/z"), (CHANGED, "/x")])
    assert first.events == [(CREATED, "/x"), (CREATED, "/x/z")]


def test_direct_callback_runs_on_the_connection_thread(zk_client):
    """A direct callback is called by kazoo's connection thread itself;
    the others still go through kazoo's callback thread.  Both see the
    same events in order."""
    kazoo = zk_client.kazoo
    direct, queued = Recorder(), Recorder()
    threads = {"direct": set(), "queued": set()}

    def on_direct(event):
        threads["direct"].add(threading.current_thread())
        direct(event)

    def on_queued(event):
        threads["queued"].add(threading.current_thread())
        queued(event)

    add_persistent_watch(kazoo, "/d", on_direct, direct=True)
    add_persistent_watch(kazoo, "/d", on_queued)
    kazoo.create("/d/e", makepath=True)
    kazoo.set("/d/e", b"1")
    expected = [(CREATED, "/d"), (CREATED, "/d/e"), (CHANGED, "/d/e")]
    direct.wait_for(expected)
    queued.wait_for(expected)
    connection_thread = kazoo._connection._connection_routine
    assert threads["direct"] == {connection_thread}
    assert connection_thread not in threads["queued"]
    # Removing it removes its direct mark too: added again as a queued
    # callback, it no longer runs on the connection thread.
    remove_persistent_watch(kazoo, "/d", on_direct)
    threads["direct"].clear()
    add_persistent_watch(kazoo, "/d", on_direct)
    kazoo.delete("/d/e")
    direct.wait_for(expected + [(DELETED, "/d/e")])
    assert connection_thread not in threads["direct"]


def test_nested_recursive_watches_deliver_once_per_callback(zk_client):
    kazoo = zk_client.kazoo
    events, inner = Recorder(), Recorder()
    add_persistent_watch(kazoo, "/", events)
    add_persistent_watch(kazoo, "/n", events)
    add_persistent_watch(kazoo, "/n", inner)
    kazoo.create("/n/m", makepath=True)
    kazoo.create("/o")  # sentinel
    events.wait_for([(CREATED, "/n"), (CREATED, "/n/m"), (CREATED, "/o")])
    assert inner.events == [(CREATED, "/n"), (CREATED, "/n/m")]


def test_invalid_arguments(zk_client):
    kazoo = zk_client.kazoo
    events = Recorder()
    with pytest.raises(ValueError):
        add_persistent_watch(kazoo, "relative", events)
    add_persistent_watch(kazoo, "/mode", events, recursive=True)
    # One mode per path and client: older servers keep only one.
    with pytest.raises(ValueError):
        add_persistent_watch(kazoo, "/mode", Recorder(), recursive=False)
    # Removing what was never added is a no-op.
    remove_persistent_watch(kazoo, "/mode", Recorder())
    remove_persistent_watch(kazoo, "/never", events)
    with pytest.raises(ValueError):
        remove_persistent_watch(kazoo, "", events)


def test_remove_on_client_without_watches_is_noop(zk_client):
    remove_persistent_watch(zk_client.kazoo, "/r", Recorder())


def test_remove_stops_delivery_and_server_watch(proxied, zk_server):
    client, proxy = proxied
    kazoo = client.kazoo
    first, second, keep = Recorder(), Recorder(), Recorder()
    add_persistent_watch(kazoo, "/r", first)
    add_persistent_watch(kazoo, "/r", second)
    add_persistent_watch(kazoo, "/keep", keep)

    remove_persistent_watch(kazoo, "/r", first)
    assert server_has_watch(kazoo, "/r")  # second still needs it
    kazoo.create("/r")
    kazoo.create("/keep")
    keep.wait_for([(CREATED, "/keep")])
    second.wait_for([(CREATED, "/r")])
    assert first.events == []

    remove_persistent_watch(kazoo, "/r", second)
    if server_version(zk_server.host, zk_server.port) >= (3, 9):
        assert not server_has_watch(kazoo, "/r")
    kazoo.set("/r", b"1")
    kazoo.set("/keep", b"1")
    keep.wait_for([(CREATED, "/keep"), (CHANGED, "/keep")])
    assert second.events == [(CREATED, "/r")]

    # Before 3.9 the server cannot drop just the persistent watch; after a
    # reconnect only the remaining one is registered again.
    drop_connection(kazoo, proxy)
    wait_for(lambda: kazoo.connected and server_has_watch(kazoo, "/keep"))
    assert not server_has_watch(kazoo, "/r")
    kazoo.set("/r", b"2")
    kazoo.set("/keep", b"2")
    keep.wait_for([(CREATED, "/keep"), (CHANGED, "/keep"),
                   (CHANGED, "/keep")])
    assert second.events == [(CREATED, "/r")]


def test_remove_keeps_kazoo_one_shot_watch_on_same_path(zk_client):
    kazoo = zk_client.kazoo
    events, seen = Recorder(), Recorder()
    kazoo.create("/same")
    add_persistent_watch(kazoo, "/same", events)
    kazoo.exists("/same", watch=seen)
    remove_persistent_watch(kazoo, "/same", events)
    kazoo.set("/same", b"1")
    seen.wait_for([(CHANGED, "/same")])
    assert events.events == []


def test_kazoo_one_shot_watches_still_work(proxied):
    client, proxy = proxied
    kazoo = client.kazoo
    events, once = Recorder(), Recorder()
    data, children = [], []
    kazoo.create("/w")
    add_persistent_watch(kazoo, "/w", events)
    # DataWatch and ChildrenWatch set one-shot watches on the same path as
    # the persistent one, the case older servers get wrong without help.
    kazoo.DataWatch("/w", lambda value, stat: data.append(value))
    kazoo.ChildrenWatch("/w", children.append)
    kazoo.create("/w/d")
    kazoo.get("/w/d", watch=once)
    wait_for(lambda: children and children[-1] == ["d"])
    kazoo.set("/w/d", b"1")
    kazoo.set("/w/d", b"2")  # the one-shot watch must not fire again
    kazoo.set("/w", b"x")
    wait_for(lambda: data and data[-1] == b"x")
    kazoo.create("/w/d/deep")
    kazoo.set("/w", b"y")
    kazoo.create("/w/f")
    wait_for(lambda: data[-1] == b"y" and sorted(children[-1]) == ["d", "f"])
    kazoo.create("/w/sentinel")
    expected = [
        (CREATED, "/w/d"), (CHANGED, "/w/d"), (CHANGED, "/w/d"),
        (CHANGED, "/w"), (CREATED, "/w/d/deep"), (CHANGED, "/w"),
        (CREATED, "/w/f"), (CREATED, "/w/sentinel")]
    events.wait_for(expected)
    assert once.events == [(CHANGED, "/w/d")]

    # After a reconnect kazoo's recipes set their watches again; they and
    # the persistent watch must all keep working.  Let ChildrenWatch finish
    # its re-read first: if a connection drops during one, kazoo 2.11's
    # ChildrenWatch can lose its watch for good (its own race).
    wait_for(lambda: sorted(children[-1]) == ["d", "f", "sentinel"])
    drop_connection(kazoo, proxy)
    wait_for(lambda: kazoo.connected and server_has_watch(kazoo, "/w"))
    kazoo.set("/w", b"z")
    kazoo.delete("/w/f")
    kazoo.create("/w/g/deeper", makepath=True)
    wait_for(lambda: data[-1] == b"z" and
             sorted(children[-1]) == ["d", "g", "sentinel"])
    events.wait_for(expected + [
        (CHANGED, "/w"), (DELETED, "/w/f"), (CREATED, "/w/g"),
        (CREATED, "/w/g/deeper")])


def test_children_watch_set_before_recursive_watch(zk_client):
    kazoo = zk_client.kazoo
    events, children = Recorder(), []
    kazoo.create("/cw")
    kazoo.ChildrenWatch("/cw", children.append)
    add_persistent_watch(kazoo, "/cw", events)
    kazoo.create("/cw/a")
    kazoo.create("/cw/a/b")
    events.wait_for([(CREATED, "/cw/a"), (CREATED, "/cw/a/b")])
    wait_for(lambda: children[-1] == ["a"])
    kazoo.create("/cw/c")
    wait_for(lambda: sorted(children[-1]) == ["a", "c"])


def test_chroot_paths(zk_client, zk_server, zk_chroot, raw_clients):
    zk_client.kazoo.create("/inner")
    inner = raw_clients(zk_server.plain_hosts + zk_chroot + "/inner")
    root = raw_clients(zk_server.plain_hosts)
    in_inner, in_chroot, in_root = Recorder(), Recorder(), Recorder()
    add_persistent_watch(inner, "/", in_inner)
    add_persistent_watch(zk_client.kazoo, "/inner", in_chroot)
    add_persistent_watch(root, zk_chroot + "/inner", in_root)
    root.create(zk_chroot + "/other")  # outside /inner: nobody sees it
    root.create(zk_chroot + "/inner/x")
    root.create(zk_chroot + "/inner/x/y")
    in_inner.wait_for([(CREATED, "/x"), (CREATED, "/x/y")])
    in_chroot.wait_for([(CREATED, "/inner/x"), (CREATED, "/inner/x/y")])
    in_root.wait_for([(CREATED, zk_chroot + "/inner/x"),
                      (CREATED, zk_chroot + "/inner/x/y")])


def test_clients_have_their_own_watches(zk_factory):
    tls_client = zk_factory(tls=True).kazoo
    plain_client = zk_factory(tls=False).kazoo
    events = Recorder()
    add_persistent_watch(tls_client, "/m", events)
    add_persistent_watch(plain_client, "/m", events)
    tls_client.create("/m")
    events.wait_for([(CREATED, "/m"), (CREATED, "/m")])  # once per client
    remove_persistent_watch(plain_client, "/m", events)
    plain_client.set("/m", b"1")
    plain_client.create("/m/n")
    events.wait_for([(CREATED, "/m"), (CREATED, "/m"), (CHANGED, "/m"),
                     (CREATED, "/m/n")])


def test_callback_exception_does_not_stop_delivery(zk_client, caplog):
    kazoo = zk_client.kazoo
    calls, events = [], Recorder()

    def broken(event):
        calls.append(event.path)
        raise RuntimeError("callback bug")
    add_persistent_watch(kazoo, "/e", broken)
    add_persistent_watch(kazoo, "/e", events)
    for i in range(5):
        kazoo.create("/e/%d" % i, makepath=True)
    events.wait_for([(CREATED, "/e")] +
                    [(CREATED, "/e/%d" % i) for i in range(5)])
    wait_for(lambda: len(calls) == 6)
    assert "callback bug" in caplog.text


def test_failed_add_is_not_registered(zk_client):
    kazoo = zk_client.kazoo
    lost, events = Recorder(), Recorder()
    kazoo.stop()
    with pytest.raises(ConnectionClosedError):
        add_persistent_watch(kazoo, "/f", lost)
    kazoo.start(timeout=30)
    # Had the failed add stayed registered, the reconnect would have
    # registered it with the server again.
    add_persistent_watch(kazoo, "/g", events)
    kazoo.create("/f")
    kazoo.create("/g")
    events.wait_for([(CREATED, "/g")])
    assert lost.events == []
    assert not server_has_watch(kazoo, "/f")


def test_survives_connection_drop_same_session(proxied):
    client, proxy = proxied
    kazoo = client.kazoo
    events = Recorder()
    session = kazoo.client_id
    add_persistent_watch(kazoo, "/d", events)
    kazoo.create("/d")
    events.wait_for([(CREATED, "/d")])
    drop_connection(kazoo, proxy)
    wait_for(lambda: kazoo.connected and server_has_watch(kazoo, "/d"))
    assert kazoo.client_id == session
    kazoo.create("/d/after")
    events.wait_for([(CREATED, "/d"), (CREATED, "/d/after")])


def test_survives_server_restart(own_zk_server):
    own_zk_server.start()
    client = ZooKeeperClient(own_zk_server.hosts, timeout=10)
    states = []
    client.add_state_listener(states.append)
    client.connect()
    try:
        kazoo = client.kazoo
        events = Recorder()
        add_persistent_watch(kazoo, "/a", events)
        kazoo.create("/a/b", makepath=True)
        events.wait_for([(CREATED, "/a"), (CREATED, "/a/b")])
        own_zk_server.stop()
        wait_for(lambda: KazooState.SUSPENDED in states)
        own_zk_server.start()
        wait_for(lambda: states[-1] == KazooState.CONNECTED, timeout=60)
        wait_for(lambda: server_has_watch(kazoo, "/a"))
        kazoo.set("/a/b", b"after restart")
        events.wait_for([(CREATED, "/a"), (CREATED, "/a/b"),
                         (CHANGED, "/a/b")])
    finally:
        client.disconnect()


def test_survives_session_loss(zk_client):
    kazoo = zk_client.kazoo
    events = Recorder()
    new_session = threading.Event()
    zk_client.add_session_listener(new_session.set)
    add_persistent_watch(kazoo, "/s", events)
    kazoo.create("/s")
    events.wait_for([(CREATED, "/s")])
    old = zk_client.session_id
    zkserver.expire_session(kazoo)
    assert new_session.wait(60)
    assert zk_client.session_id != old
    wait_for(lambda: server_has_watch(kazoo, "/s"))
    kazoo.create("/s/t")
    events.wait_for([(CREATED, "/s"), (CREATED, "/s/t")])
