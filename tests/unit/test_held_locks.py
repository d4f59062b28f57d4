# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""HeldRequestLocks: a held lock is read once, and read again as soon as
it changes or the session that watched it is gone."""

import pytest

from nodepool.zk.held_locks import HeldRequestLocks
from nodepool.zk.models import NodeRequest
from nodepool.zk.requests import RequestStore
from tests.fixtures import zkserver
from tests.fixtures.waits import wait_for


@pytest.fixture
def theirs(zk_factory):
    """Another client's store (another launcher holding locks)."""
    return RequestStore(zk_factory())


def submitted(store):
    request = NodeRequest()
    request.node_types = ["small"]
    request.requestor = "zuul01"
    store.submit_request(request)
    return request


def test_held_lock_is_read_once(zk_client, theirs):
    held = HeldRequestLocks(zk_client)
    request = submitted(theirs)
    theirs.lock_request(request)
    for _ in range(3):
        assert held.is_held(request.id)
    assert held.reads == 1
    theirs.unlock_request(request)


def test_released_lock_is_noticed(zk_client, theirs):
    held = HeldRequestLocks(zk_client)
    request = submitted(theirs)
    theirs.lock_request(request)
    assert held.is_held(request.id)
    theirs.unlock_request(request)
    wait_for(lambda: not held.is_held(request.id))


def test_free_lock_is_always_read(zk_client, theirs):
    held = HeldRequestLocks(zk_client)
    never_locked = submitted(theirs)
    unlocked = submitted(theirs)
    theirs.lock_request(unlocked)
    theirs.unlock_request(unlocked)
    for _ in range(2):
        assert not held.is_held(never_locked.id)
        assert not held.is_held(unlocked.id)
    assert held.reads == 4


def test_retain_forgets_the_others(zk_client, theirs):
    held = HeldRequestLocks(zk_client)
    first, second = submitted(theirs), submitted(theirs)
    for request in (first, second):
        theirs.lock_request(request)
        assert held.is_held(request.id)
    held.retain([second.id])
    assert held.is_held(first.id) and held.is_held(second.id)
    assert held.reads == 3


def test_release_after_our_session_was_replaced_is_noticed(
        zk_client, theirs):
    """Our watches go with our session: what we remembered is read again
    in the new one."""
    held = HeldRequestLocks(zk_client)
    request = submitted(theirs)
    theirs.lock_request(request)
    assert held.is_held(request.id)
    generation = zk_client.session_generation
    zkserver.expire_session(zk_client.kazoo)
    wait_for(lambda: zk_client.session_generation != generation
             and zk_client.connected)
    theirs.unlock_request(request)
    wait_for(lambda: not held.is_held(request.id))
