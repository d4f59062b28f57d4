# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The launcher's cleanup: deletions that fail, leaked instances whose
delete fails, empty node records, and hold expiry (max-hold-age)."""

import logging

from kazoo.exceptions import NotEmptyError

from nodepool.zk.models import NodeState
from nodepool.zk.nodes import NodeStore
from tests.fakes.test_driver import FakeCloud
from tests.fixtures.waits import wait_for
from tests.functional.conftest import (
    idle_ready, node_ids, read_nodes, served_by)


def set_state(launcher, node_id, state):
    """Write a node's state under its lock, as an operator tool does."""
    store = NodeStore(launcher.services.zk_client)
    node = store.get_node(node_id, cached=False)
    store.lock_node(node, blocking=True, timeout=10)
    try:
        node.state = state
        store.store_node(node)
    finally:
        store.unlock_node(node)


def test_failing_cloud_delete_keeps_node_deleting_and_replaces_it(
        launcher_factory, zuul):
    launcher = launcher_factory(min_ready=1)
    cloud = FakeCloud.get("fake")
    (node,) = wait_for(lambda: idle_ready(zuul) or None)
    cloud.fail_deletes = 10 ** 6
    set_state(launcher, node.id, NodeState.DELETING)
    # min-ready replaces it although the old instance cannot be deleted.
    wait_for(lambda: [n for n in idle_ready(zuul) if n.id != node.id],
             message="no replacement for the undeletable node")
    # Several attempts failed; the record stays, still deleting, and so
    # does the instance.
    wait_for(lambda: cloud.fail_deletes <= 10 ** 6 - 3)
    (old,) = [n for n in read_nodes(zuul.kazoo) if n.id == node.id]
    assert old.state == NodeState.DELETING
    assert node.external_id in {i.external_id for i in cloud.list()}
    # Once the cloud deletes again, the node goes.
    cloud.fail_deletes = 0
    wait_for(lambda: node.id not in node_ids(zuul.kazoo)
             and node.external_id not in
             {i.external_id for i in cloud.list()})


def test_failure_removing_the_record_is_retried(launcher_factory, zuul):
    # deleteRawNode_exception: the instance is gone but removing the
    # record fails once; a later pass removes it.
    launcher_factory()
    cloud = FakeCloud.get("fake")
    cloud.fail_record_deletes = 1
    (node,) = zuul.run_job(["small"])
    zuul.finish([node])
    wait_for(lambda: node.id not in node_ids(zuul.kazoo), timeout=30)
    calls = cloud.record_deletes
    assert len(calls) >= 2 and set(calls) == {node.id}
    assert cloud.fail_record_deletes == 0
    assert not cloud.list()
    # Nothing is wedged.
    zuul.finish(zuul.run_job(["small"]))


def test_leaked_instance_whose_delete_fails_is_retried(launcher_factory,
                                                       zuul):
    # node_delete_error: the record is gone while the cloud will not
    # delete the server; the leak cleanup keeps trying until it can.
    launcher = launcher_factory()
    cloud = FakeCloud.get("fake")
    (node,) = zuul.run_job(["small"])
    cloud.fail_deletes = 10 ** 6
    zuul.return_nodes([node])
    store = NodeStore(launcher.services.zk_client)
    wait_for(lambda: cloud.fail_deletes < 10 ** 6)
    # The record goes (an operator removed it, say); the server stays.
    record = store.get_node(node.id, cached=False)
    store.lock_node(record, blocking=True, timeout=10)
    path = "/nodepool/nodes/%s" % node.id

    def delete_record():
        # The launcher's deleted-node worker may be queuing on the lock at
        # that moment (a contender appears mid-delete): try again.
        try:
            zuul.kazoo.delete(path, recursive=True)
        except NotEmptyError:
            return False
        return True
    wait_for(delete_record)
    failed = cloud.fail_deletes
    wait_for(lambda: cloud.fail_deletes <= failed - 2, timeout=30,
             message="leak cleanup did not retry")
    assert node.external_id in {i.external_id for i in cloud.list()}
    cloud.fail_deletes = 0
    wait_for(lambda: not cloud.list(), timeout=30)


def test_empty_node_record_removed(launcher_factory, zuul):
    zuul.kazoo.create("/nodepool/nodes/9000000010", b"", makepath=True)
    launcher_factory()
    wait_for(lambda: "9000000010" not in node_ids(zuul.kazoo), timeout=30)
    done, nodes = served_by(zuul, zuul.submit(["small"]))
    zuul.finish(nodes)


HOLD_AGE = """
labels:
  - name: small
max-hold-age: {max_hold_age}
providers:
  - name: fake
    driver: test
    pools:
      - name: main
        labels:
          - name: small
"""


def test_hold_expiration_shorter_than_max_hold_age(launcher_factory, zuul):
    launcher_factory(HOLD_AGE, max_hold_age=3600)
    short, default, text = zuul.run_job(["small", "small", "small"])
    zuul.hold_nodes([short], hold_job="t p j", hold_expiration=1)
    zuul.hold_nodes([default], hold_job="t p j")
    # A string is read as a number of seconds.
    zuul.hold_nodes([text], hold_job="t p j", hold_expiration="1")
    wait_for(lambda: not {short.id, text.id} & set(node_ids(zuul.kazoo)),
             timeout=30, message="expired holds not deleted")
    (kept,) = read_nodes(zuul.kazoo)
    assert kept.id == default.id and kept.state == NodeState.HOLD


def test_hold_expiration_capped_by_max_hold_age(launcher_factory, zuul):
    launcher_factory(HOLD_AGE, max_hold_age=1)
    (node,) = zuul.run_job(["small"])
    zuul.hold_nodes([node], hold_job="t p j", hold_expiration=3600)
    wait_for(lambda: node.id not in node_ids(zuul.kazoo), timeout=30,
             message="max-hold-age did not cap the hold")
    assert not FakeCloud.get("fake").list()


def test_unreadable_hold_expiration_reads_as_none(launcher_factory, zuul):
    launcher_factory(HOLD_AGE, max_hold_age=3600)
    (node,) = zuul.run_job(["small"])
    zuul.hold_nodes([node], hold_job="t p j",
                    hold_expiration="notanumber")
    (held,) = read_nodes(zuul.kazoo)
    assert held.state == NodeState.HOLD and held.hold_expiration == 0


def test_deleted_tombstone_removed_without_a_second_cloud_delete(
        launcher_factory, zuul, caplog):
    """A ``deleted`` record (its instance gone; its deleter died before
    removing the record, or is removing it right now in another
    launcher) is removed; the instance is not deleted again."""
    launcher = launcher_factory(min_ready=1)
    (node,) = wait_for(lambda: idle_ready(zuul) or None)
    with caplog.at_level(logging.INFO, logger="nodepool"):
        set_state(launcher, node.id, NodeState.DELETED)
        wait_for(lambda: node.id not in node_ids(zuul.kazoo), timeout=30)
    assert "Removing the record of deleted node %s" % node.id in caplog.text
    assert "Deleting deleted node %s" % node.id not in caplog.text


def test_deleter_finds_its_node_removed_already(launcher_factory, zuul,
                                                caplog):
    """Two launchers of one provider: the other one's deleter removed the
    node after this one locked it (a recursive delete takes our lock
    contender with it).  This deleter ends quietly."""
    launcher = launcher_factory(min_ready=1)
    (node,) = wait_for(lambda: idle_ready(zuul) or None)
    provider = launcher.providers["fake"]
    store = launcher.services.nodes
    record = store.get_node(node.id, cached=False)
    store.lock_node(record, blocking=True, timeout=10)
    zuul.kazoo.delete("/nodepool/nodes/" + node.id, recursive=True)
    with caplog.at_level(logging.INFO):
        deleter = provider.start_node_cleanup(record)
        wait_for(lambda: deleter.complete)
    assert "gone already" in caplog.text
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
