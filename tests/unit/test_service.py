# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The service-thread base: its life cycle, wake-ups and error handling."""

import concurrent.futures
import logging
import threading
import time

from nodepool.service import (
    ServiceThread, TaskThreads, join_all, shutdown_executor)
from tests.fixtures.waits import wait_for

log = logging.getLogger("test.service")


class Counter(ServiceThread):
    """Counts its passes; a pass can be made to block or to fail."""

    def __init__(self, interval=60.0, name="counter"):
        super().__init__(name, interval, log)
        # ServiceThread.passes counts the passes.
        self.fail = False
        self.hold = threading.Event()
        self.hold.set()
        self.in_pass = threading.Event()
        self.stopped_calls = 0
        self.finished = threading.Event()

    def run_once(self):
        self.in_pass.set()
        self.hold.wait()
        if self.fail:
            raise RuntimeError("pass failed")

    def on_stop(self):
        self.stopped_calls += 1

    def finish(self):
        self.finished.set()


def test_passes_at_interval_and_on_wake():
    thread = Counter(interval=60.0)
    thread.start()
    try:
        wait_for(lambda: thread.passes == 1)
        # The interval is a minute: only wake() can bring the next pass.
        thread.wake()
        wait_for(lambda: thread.passes == 2)
    finally:
        thread.stop()
        assert thread.join(10)
    assert thread.name == "counter"


def test_failed_passes_are_counted():
    thread = Counter(interval=60.0)
    thread.fail = True
    thread.start()
    try:
        wait_for(lambda: thread.passes == 1)
        thread.fail = False
        thread.wake()
        wait_for(lambda: thread.passes == 2)
    finally:
        thread.stop()
        assert thread.join(10)


def test_short_interval_repeats():
    thread = Counter(interval=0.01)
    thread.start()
    try:
        wait_for(lambda: thread.passes >= 5)
    finally:
        thread.stop()
        assert thread.join(10)


def test_stop_never_blocks_and_join_times_out():
    thread = Counter()
    thread.hold.clear()
    thread.start()
    assert thread.in_pass.wait(10)
    started = time.monotonic()
    thread.stop()
    assert time.monotonic() - started < 1.0
    assert thread.stopping
    # The pass is still blocked: join gives up after its timeout.
    assert thread.join(0.1) is False
    assert thread.is_alive()
    thread.hold.set()
    assert thread.join(10) is True
    assert not thread.is_alive()
    assert thread.passes == 1  # stopped: no pass after the blocked one
    assert thread.finished.is_set()


def test_errors_are_logged_and_the_loop_goes_on(caplog):
    thread = Counter(interval=0.01)
    thread.fail = True
    with caplog.at_level(logging.ERROR, logger="test.service"):
        thread.start()
        try:
            wait_for(lambda: thread.passes >= 3)
        finally:
            thread.stop()
            assert thread.join(10)
    errors = [r for r in caplog.records if r.exc_info]
    assert errors and "Error in counter pass" in errors[0].getMessage()
    assert isinstance(errors[0].exc_info[1], RuntimeError)


class Crashing(ServiceThread):
    """A custom loop that escapes with an error the first two times."""

    def __init__(self):
        super().__init__("crashing", 0.01, log)
        self.runs = 0

    def loop(self):
        self.runs += 1
        if self.runs <= 2:
            raise ValueError("loop broke")
        while not self.wait(None):
            pass


def test_a_crashed_loop_is_logged_and_restarted(caplog):
    thread = Crashing()
    with caplog.at_level(logging.ERROR, logger="test.service"):
        thread.start()
        try:
            wait_for(lambda: thread.runs == 3)
            assert thread.is_alive()
        finally:
            thread.stop()
            assert thread.join(10)
    crashes = [r for r in caplog.records
               if "crashing crashed" in r.getMessage()]
    assert len(crashes) == 2 and crashes[0].exc_info


def test_stop_before_start_and_twice():
    thread = Counter()
    assert thread.join(0) is True  # never started
    thread.stop()
    thread.stop()
    assert thread.stopped_calls == 2
    assert thread.join(0) is True
    assert thread.passes == 0


def test_a_failing_on_stop_does_not_escape(caplog):
    class BadStop(Counter):
        def on_stop(self):
            raise RuntimeError("cannot unblock")

    thread = BadStop()
    thread.start()
    with caplog.at_level(logging.ERROR, logger="test.service"):
        thread.stop()
    assert thread.join(10)
    assert any("Error stopping counter" in r.getMessage()
               for r in caplog.records)


def test_task_threads_run_log_prune_and_refuse_after_stop(caplog):
    tasks = TaskThreads(log)
    release = threading.Event()
    ran = []

    def work(value):
        ran.append(value)
        release.wait()

    def broken():
        raise RuntimeError("task broke")

    with caplog.at_level(logging.ERROR, logger="test.service"):
        first = tasks.spawn("task-1", work, 1)
        tasks.spawn("task-2", broken)
        assert first.name == "task-1"
        wait_for(lambda: tasks.alive() == [first])
    assert any("Error in task-2" in r.getMessage() and r.exc_info
               for r in caplog.records)
    tasks.stop()
    assert tasks.spawn("task-3", work, 3) is None
    assert tasks.join(0.05) is False  # task-1 still waits
    release.set()
    assert tasks.join(10) is True
    assert tasks.alive() == []
    assert ran == [1]


def test_join_all_shares_one_deadline():
    release = threading.Event()
    threads = [threading.Thread(target=release.wait, daemon=True)
               for _ in range(3)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    assert join_all(threads, 0.2, log) is False
    # One deadline for all three, not 0.2 s each.
    assert time.monotonic() - started < 0.5
    release.set()
    assert join_all(threads, 10, log) is True


def test_shutdown_executor_cancels_queued_work_and_joins():
    executor = concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix="test-exec")
    release = threading.Event()
    running = executor.submit(release.wait)
    queued = executor.submit(lambda: None)
    assert shutdown_executor(executor, 0.05, log) is False
    assert queued.cancelled()
    release.set()
    assert running.result(10) is True
    assert shutdown_executor(executor, 10, log) is True
    assert not [t for t in threading.enumerate()
                if t.name.startswith("test-exec")]
