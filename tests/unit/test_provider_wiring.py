# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""A provider and its adapter are wired through explicit registration
(``set_wake_callback``) and arguments (``report_deleted``), never by
replacing methods on each other's instances."""

import threading
import types

from nodepool.driver.statemachine.adapter import Adapter
from nodepool.driver.statemachine.provider import StateMachineProvider
from nodepool.zk.models import Node, NodeState
from tests.fixtures.waits import wait_for


class RecordingNodes:
    """The NodeStore calls a deleter makes, remembered."""

    def __init__(self):
        self.deleted = []

    def store_node(self, node):
        pass

    def delete_node(self, node):
        self.deleted.append(node.id)

    def unlock_node(self, node):
        pass


class RecordingProvider(StateMachineProvider):
    """Remembers which nodes :meth:`node_deleted` heard of."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reported = []

    def node_deleted(self, node):
        self.reported.append(node.id)


class WaitingItem:
    """A runner work item that completes once ``go`` is set."""

    def __init__(self):
        self.go = threading.Event()
        self.complete = False

    def step(self):
        if self.go.is_set():
            self.complete = True

    def abort(self, error):
        self.complete = True


def make_provider(interval=1.0):
    config = types.SimpleNamespace(name="wired")
    services = types.SimpleNamespace(nodes=RecordingNodes(), stats=None)
    adapter = Adapter(config)
    return RecordingProvider(config, adapter, services, interval=interval)


def unowned_node(node_id):
    # No external id: the deleter removes the record straight away.
    node = Node(id=node_id)
    node.state = NodeState.DELETING
    return node


def test_adapter_wakes_the_provider_runners_it_registered_with():
    adapter = Adapter(types.SimpleNamespace(name="alone"))
    adapter.wake_runners()  # no provider yet: nothing to wake
    # A runner interval far longer than the test: only a wake-up moves it.
    provider = make_provider(interval=300)
    assert "wake_runners" not in vars(provider.adapter)
    item = WaitingItem()
    provider.create_runner.add(item)
    provider.start()
    try:
        item.go.set()
        provider.adapter.wake_runners()
        wait_for(lambda: item.complete, timeout=10)
    finally:
        provider.stop()
        provider.join(10)


def test_deleter_reports_the_deletion_unless_told_not_to():
    provider = make_provider()
    reported = provider.start_node_cleanup(unowned_node("0000000001"))
    quiet = provider.start_node_cleanup(unowned_node("0000000002"),
                                        report_deleted=False)
    for deleter in (reported, quiet):
        deleter.step()
        assert deleter.complete and deleter.succeeded
    assert provider.nodes.deleted == ["0000000001", "0000000002"]
    assert provider.reported == ["0000000001"]
