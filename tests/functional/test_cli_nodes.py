# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""``nodepool hold`` and ``delete`` against a running launcher: a held
node is not handed out, a held min-ready node is replaced, a node locked
by Zuul is left alone."""

import pytest

from nodepool.cmd import nodepoolcmd
from nodepool.zk.models import NodeState
from nodepool.zk.nodes import NodeStore
from tests.fixtures.waits import wait_for
from tests.functional.conftest import base_config, read_nodes
from tests.functional.test_cli import table, zk_config

IMAGES = """
diskimages:
  - name: ubuntu
  - name: frozen
    pause: true
"""


@pytest.fixture
def cli_config(tmp_path, zk_server, zk_chroot):
    """A CLI config with the launcher's providers and labels (min-ready
    as given) and two diskimages."""
    def make(min_ready=0):
        path = tmp_path / ("cli-%d.yaml" % min_ready)
        body = base_config(min_ready=min_ready)
        path.write_text(zk_config(zk_server, zk_chroot) + body + IMAGES)
        return str(path)
    return make


@pytest.fixture
def cli(cli_config, capsys):
    config = cli_config()

    def run(*args, **kwargs):
        capsys.readouterr()
        status = nodepoolcmd.main(["-c", config] + list(args), **kwargs)
        out, err = capsys.readouterr()
        return status, out, err
    return run


def node_state(zk_client, node_id):
    node = NodeStore(zk_client).get_node(node_id, cached=False)
    return None if node is None else node.state


def test_held_node_not_reused_by_requests(launcher_factory, zuul, cli,
                                          zk_client):
    """attempt_request_held_node: a held READY node is never handed out;
    the next request gets a new node."""
    launcher_factory()
    first = zuul.wait_for_request(zuul.submit(["small"]))
    zuul.delete_request(first)
    (held_id,) = first.nodes
    # Zuul let go of the request without locking: the node stays READY
    # and allocated until the launcher de-allocates it; hold it now.
    status, out, _ = cli("hold", held_id)
    assert status == 0
    assert table(out)[1][6] == "hold"

    done = zuul.wait_for_request(zuul.submit(["small"]))
    assert done.state == "fulfilled"
    assert done.nodes != [held_id]
    taken = zuul.accept_nodes(done)
    assert node_state(zk_client, held_id) == NodeState.HOLD
    zuul.finish(taken)
    # The held node survives the launcher's cleanup passes untouched.
    wait_for(lambda: node_state(zk_client, taken[0].id) is None)
    assert node_state(zk_client, held_id) == NodeState.HOLD


def test_hold_then_delete_replaced_by_min_ready(launcher_factory, zuul,
                                                cli_config, capsys,
                                                zk_client):
    """hold: a held min-ready node no longer counts as ready, so a
    replacement is built; ``delete`` of the held node removes it and a
    new request is served."""
    launcher_factory(min_ready=1)
    config = cli_config(min_ready=1)

    def cli(*args):
        capsys.readouterr()
        status = nodepoolcmd.main(["-c", config] + list(args))
        return status, capsys.readouterr().out

    def ready_ids():
        return [n.id for n in read_nodes(zk_client.kazoo)
                if n.state == NodeState.READY and not n.allocated_to]
    (original,) = wait_for(ready_ids)
    status, out = cli("hold", original)
    assert status == 0 and table(out)[1][6] == "hold"
    replacement = wait_for(lambda: [i for i in ready_ids() if i != original])
    assert original not in replacement

    status, out = cli("delete", original)
    assert status == 0 and table(out)[1][6] == "deleting"
    wait_for(lambda: node_state(zk_client, original) is None)
    status, out = cli("list")
    assert original not in [row[0] for row in table(out)[1:]]

    nodes = zuul.run_job(["small"])
    assert nodes[0].id != original
    zuul.finish(nodes)


def test_hold_node_locked_by_zuul_fails_cleanly(launcher_factory, zuul, cli,
                                                zk_client):
    """attempt_hold_busy_node: the node is locked by its user; hold and
    delete give up with a clear error and change nothing."""
    launcher_factory()
    (node,) = zuul.run_job(["small"])
    for command in ("hold", "delete"):
        status, out, err = cli(command, node.id, lock_timeout=0.5)
        assert status == 1
        assert "Traceback" not in out + err
        assert err.strip() == ("nodepool: error: Timed out after 0.5s "
                               "waiting for the lock of node %s" % node.id)
    assert node_state(zk_client, node.id) == NodeState.IN_USE
    # Our failed attempts left no contender behind: Zuul is the only one.
    assert len(NodeStore(zk_client).node_lock_contenders(node.id)) == 1
    zuul.finish([node])
