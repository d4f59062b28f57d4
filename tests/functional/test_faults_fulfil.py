# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The transaction that fulfils a request and releases its locks, when
the connection drops around it: whether it applied is then unknown, and
the launcher must find out before it touches anything again."""

import textwrap
import threading

import pytest
from kazoo.exceptions import ConnectionLoss

from nodepool.launcher.server import NodePoolLauncher
from nodepool.zk import locks, paths
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.models import NodeState, RequestState
from tests.fakes.scanner import FakeScanner
from tests.fixtures.waits import wait_for
from tests.functional.conftest import BASE_CONFIG, BASE_DEFAULTS, FAST


class LosesFulfilment(ZooKeeperClient):
    """A client whose first transaction writing a request gets
    ConnectionLoss: after the server applied it (``applied``), or without
    being sent at all."""

    def __init__(self, *args, applied: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.hit = threading.Event()
        send = self.kazoo._call

        def call(request, async_object):
            operations = getattr(request, "operations", None) or ()
            if self.hit.is_set() or not any(
                    type(op).__name__ == "SetData" and "/requests/" in op.path
                    for op in operations):
                return send(request, async_object)
            self.hit.set()
            if not applied:
                async_object.set_exception(ConnectionLoss("not sent (test)"))
                return False
            answer = self.kazoo.handler.async_result()
            answer.rawlink(lambda _: async_object.set_exception(
                ConnectionLoss("answer lost (test)")))
            return send(request, answer)
        self.kazoo._call = call


@pytest.fixture
def launcher_with(tmp_path, zk_server, zk_chroot):
    made = []

    def start(applied):
        client = LosesFulfilment(zk_server.tls_hosts + zk_chroot,
                                 **zk_server.tls_args(), applied=applied)
        client.connect()
        path = tmp_path / "nodepool.yaml"
        path.write_text(textwrap.dedent(BASE_CONFIG).format(**BASE_DEFAULTS))
        launcher = NodePoolLauncher(str(path), zk_client=client,
                                    intervals=FAST, scanner=FakeScanner())
        made.append((launcher, client))
        launcher.start()
        assert launcher.ready.wait(30)
        return launcher, client
    yield start
    for launcher, client in made:
        launcher.stop()
        launcher.join()
        client.disconnect()


def handlers_done(launcher):
    return all(not worker.handlers
               for worker in launcher.pool_workers.values())


@pytest.mark.parametrize("applied", [True, False])
def test_fulfilment_with_its_answer_lost(launcher_with, zuul, applied):
    launcher, client = launcher_with(applied)
    request = zuul.submit(["small"])
    done = zuul.wait_for_request(request)
    assert done.state == RequestState.FULFILLED
    assert client.hit.is_set()
    # The handler finished without writing anything more: the request
    # was written once as pending and once as fulfilled.
    wait_for(lambda: handlers_done(launcher))
    _, stat = zuul.kazoo.get(paths.request_path(done.id))
    assert stat.version == 2
    [node_id] = done.nodes
    for path in (paths.node_lock_path(node_id),
                 paths.request_lock_path(done.id)):
        assert locks.lock_contenders(zuul.kazoo, path) == []
    [node] = zuul.accept_nodes(done)
    assert node.state == NodeState.IN_USE
    assert node.allocated_to == done.id
    zuul.return_nodes([node])
