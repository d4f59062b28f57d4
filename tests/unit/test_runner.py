# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The provider runner: an error escaping a work item's step ends the
item through its ``abort()`` (a terminal state its owner understands)."""

import logging
import threading

from nodepool.driver.statemachine.provider import Runner
from tests.fixtures.waits import wait_for


class Item:
    def __init__(self, fail=False):
        self.fail = fail
        self.complete = False
        self.steps = 0
        self.aborted = None
        self.done = threading.Event()

    def step(self):
        self.steps += 1
        if self.fail:
            raise RuntimeError("boom")
        if self.steps >= 3:
            self.complete = True
            self.done.set()

    def abort(self, error):
        self.aborted = error
        self.state = "failed"
        self.complete = True
        self.done.set()


class BrokenAbort(Item):
    def abort(self, error):
        raise ValueError("abort broke too")


def test_escaping_error_aborts_the_item_and_others_go_on():
    runner = Runner("test-runner", 0.01, logging.getLogger("test"))
    runner.start()
    try:
        bad, good, worse = Item(fail=True), Item(), BrokenAbort(fail=True)
        for item in (bad, good, worse):
            runner.add(item)
        assert bad.done.wait(10) and good.done.wait(10)
        assert isinstance(bad.aborted, RuntimeError)
        assert bad.state == "failed"
        assert good.aborted is None and good.steps == 3
        # Even an item whose abort() fails leaves the runner's list.
        wait_for(lambda: not runner.items())
        assert worse.complete
    finally:
        runner.stop()
        runner.join(10)
