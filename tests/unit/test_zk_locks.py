# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
import re
import threading

import pytest
from kazoo.recipe.lock import Lock

from nodepool.exceptions import LockError, TimeoutException
from nodepool.zk import locks
from tests.fixtures import zkserver
from tests.fixtures.waits import wait_for

PATH = "/nodepool/nodes/0000000000/lock"
CONTENDER = re.compile(r"^[0-9a-f]{32}__lock__\d{10}$")


def test_mutual_exclusion_between_clients(zk_factory):
    a = zk_factory()
    b = zk_factory()
    lock_a = locks.acquire_lock(a.kazoo, PATH)
    got_b = threading.Event()
    result = {}

    def take():
        result["lock"] = locks.acquire_lock(b.kazoo, PATH, timeout=30)
        got_b.set()
    t = threading.Thread(target=take, daemon=True)
    t.start()
    # B is queued behind A: its contender exists but is not the lowest.
    wait_for(lambda: len(locks.lock_contenders(a.kazoo, PATH)) == 2)
    assert not got_b.is_set()
    assert locks.lock_contenders(a.kazoo, PATH)[0] == lock_a.node
    locks.release_lock(lock_a)
    assert got_b.wait(30)
    t.join(30)
    assert locks.lock_contenders(a.kazoo, PATH) == [result["lock"].node]
    assert locks.is_lock_holder(result["lock"])
    assert not locks.is_lock_holder(lock_a)
    locks.release_lock(result["lock"])
    assert locks.lock_contenders(a.kazoo, PATH) == []
    assert not locks.lock_is_held(a.kazoo, PATH)


def test_non_blocking_fails_and_cleans_up(zk_factory):
    a = zk_factory()
    b = zk_factory()
    lock_a = locks.acquire_lock(a.kazoo, PATH)
    with pytest.raises(LockError) as exc:
        locks.acquire_lock(b.kazoo, PATH, blocking=False)
    assert not isinstance(exc.value, TimeoutException)
    assert locks.lock_contenders(b.kazoo, PATH) == [lock_a.node]
    locks.release_lock(lock_a)
    lock_b = locks.acquire_lock(b.kazoo, PATH, blocking=False)
    assert locks.is_lock_holder(lock_b)
    locks.release_lock(lock_b)


def test_timeout_raises_and_cleans_up(zk_factory):
    a = zk_factory()
    b = zk_factory()
    lock_a = locks.acquire_lock(a.kazoo, PATH)
    with pytest.raises(TimeoutException):
        locks.acquire_lock(b.kazoo, PATH, timeout=0.5)
    assert locks.lock_contenders(b.kazoo, PATH) == [lock_a.node]
    locks.release_lock(lock_a)


def test_locked_context_manager(zk_client):
    with locks.locked(zk_client.kazoo, PATH, identifier="me") as lock:
        assert locks.lock_is_held(zk_client.kazoo, PATH)
        assert lock.contenders() == ["me"]
        with pytest.raises(LockError):
            with locks.locked(zk_client.kazoo, PATH, blocking=False):
                pass  # pragma: no cover
    assert not locks.lock_is_held(zk_client.kazoo, PATH)


def test_locked_releases_on_exception(zk_client):
    with pytest.raises(RuntimeError):
        with locks.locked(zk_client.kazoo, PATH):
            raise RuntimeError("boom")
    assert locks.lock_contenders(zk_client.kazoo, PATH) == []


def test_contender_naming_compatible_with_plain_kazoo(zk_factory):
    ours = zk_factory()
    zuul = zk_factory()
    lock = locks.acquire_lock(ours.kazoo, PATH)
    (name,) = zuul.kazoo.get_children(PATH)
    assert CONTENDER.match(name)
    # Zuul uses kazoo's Lock directly: it must see our lock as held ...
    theirs = Lock(zuul.kazoo, PATH, "zuul")
    assert theirs.acquire(blocking=False) is False
    locks.release_lock(lock)
    # ... and we must see its lock as held.
    assert theirs.acquire(blocking=False) is True
    assert locks.lock_is_held(ours.kazoo, PATH)
    assert locks.lock_contenders(ours.kazoo, PATH) == [theirs.node]
    with pytest.raises(LockError):
        locks.acquire_lock(ours.kazoo, PATH, blocking=False)
    theirs.release()
    assert not locks.lock_is_held(ours.kazoo, PATH)


def test_contenders_ignore_other_children_and_missing_dir(zk_client):
    kz = zk_client.kazoo
    assert locks.lock_contenders(kz, PATH) == []
    assert locks.force_unlock(kz, PATH) is None
    kz.create(PATH + "/not-a-contender", makepath=True)
    assert locks.lock_contenders(kz, PATH) == []
    assert not locks.lock_is_held(kz, PATH)


def test_force_unlock_deletes_lowest(zk_factory):
    a = zk_factory()
    b = zk_factory()
    # A non-ephemeral lock, as a crashed consumer might leave behind.
    lock_a = locks.acquire_lock(a.kazoo, PATH, ephemeral=False)
    waiter = Lock(b.kazoo, PATH)
    got = threading.Event()

    def take():
        if waiter.acquire(timeout=30):
            got.set()
    t = threading.Thread(target=take, daemon=True)
    t.start()
    wait_for(lambda: len(locks.lock_contenders(a.kazoo, PATH)) == 2)
    assert locks.force_unlock(a.kazoo, PATH) == lock_a.node
    # The waiter (higher sequence) survives and now holds the lock.
    assert got.wait(30)
    t.join(30)
    assert locks.lock_contenders(a.kazoo, PATH) == [waiter.node]
    assert not locks.is_lock_holder(lock_a)
    # Releasing the broken lock must not disturb the new holder.
    locks.release_lock(lock_a)
    assert locks.lock_contenders(a.kazoo, PATH) == [waiter.node]
    waiter.release()


def test_lock_released_on_session_loss(zk_factory):
    a = zk_factory()
    b = zk_factory()
    lock_a = locks.acquire_lock(a.kazoo, PATH)
    zkserver.expire_session(a.kazoo)
    lock_b = locks.acquire_lock(b.kazoo, PATH, timeout=30)
    assert locks.is_lock_holder(lock_b)
    wait_for(lambda: a.connected, timeout=60)
    assert not locks.is_lock_holder(lock_a)
    # Release after the loss must neither raise nor touch B's lock.
    locks.release_lock(lock_a)
    assert not lock_a.is_acquired
    assert locks.lock_contenders(b.kazoo, PATH) == [lock_b.node]
    locks.release_lock(lock_b)


def test_release_on_stopped_client_does_not_raise(zk_factory):
    a = zk_factory()
    lock = locks.acquire_lock(a.kazoo, PATH)
    a.kazoo.stop()
    locks.release_lock(lock)
    assert not lock.is_acquired
    locks.release_lock(None)
