# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The launcher's request journal (nodepool/launcher/why.py) on a fake
clock: reasons, timelines, and the count, age and timeline bounds."""

import threading
import types

from nodepool.launcher import why


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


def journal(**kwargs):
    clock = Clock()
    return why.RequestJournal(clock=clock, **kwargs), clock


def test_reason_of_the_pool_that_got_furthest():
    j, clock = journal()
    j.set_reason("100-1", "p/a", why.LABEL_NOT_SERVED, "not here")
    j.set_reason("100-1", "p/b", why.PAUSED_QUOTA, "max-servers")
    assert j.reason("100-1") == {"reason": why.PAUSED_QUOTA,
                                 "detail": "max-servers", "pool": "p/b",
                                 "since": 1000.0}
    clock.advance(3)
    j.set_reason("100-1", "p/b", why.LAUNCHING, "node 1 attempt 1")
    assert j.reason("100-1")["reason"] == why.LAUNCHING
    assert j.reason("100-1")["since"] == 1003.0
    assert j.reason("nope") is None and j.describe("nope") is None


def test_timeline_records_changes_once():
    j, clock = journal()
    j.set_reason("100-1", "p/a", why.ACCEPTED, "by x")
    j.set_reason("100-1", "p/a", why.ACCEPTED, "by x")  # unchanged
    clock.advance(1)
    j.note("100-1", "node 7 building", pool="p/a")
    clock.advance(1)
    j.set_reason("100-1", "p/a", why.FULFILLED, "nodes 7")
    described = j.describe("100-1")
    assert [(e["time"], e["event"]) for e in described["timeline"]] == [
        (1000.0, "accepted: by x"), (1001.0, "node 7 building"),
        (1002.0, "fulfilled: nodes 7")]
    assert described["reason"] == why.FULFILLED
    assert described["pools"]["p/a"]["detail"] == "nodes 7"
    assert described["first_seen"] == 1000.0
    assert described["last_seen"] == 1002.0


def test_repeated_event_takes_one_entry():
    j, clock = journal()
    for _ in range(5):
        j.note("100-1", "ZooKeeper unavailable")
    j.note("100-1", "back")
    timeline = j.describe("100-1")["timeline"]
    assert [(e["event"], e["repeats"]) for e in timeline] == [
        ("ZooKeeper unavailable", 5), ("back", 1)]


def test_timeline_bounded_oldest_dropped():
    j, clock = journal(max_events=5)
    for i in range(12):
        j.note("100-1", "event %d" % i)
    described = j.describe("100-1")
    assert [e["event"] for e in described["timeline"]] == [
        "event %d" % i for i in range(7, 12)]
    assert described["dropped_events"] == 7


def test_count_bound_evicts_least_recently_touched():
    j, clock = journal(max_requests=3)
    for i in range(3):
        j.set_reason("100-%d" % i, "p/a", why.PAUSED_QUOTA, "max-servers")
        clock.advance(1)
    # A pool looked at request 0 again: it is kept, request 1 goes.
    j.set_reason("100-0", "p/a", why.PAUSED_QUOTA, "max-servers")
    j.set_reason("100-3", "p/a", why.PAUSED_QUOTA, "max-servers")
    assert len(j) == 3
    assert j.reason("100-1") is None
    assert all(j.reason("100-%d" % i) for i in (0, 2, 3))
    for i in range(4, 100):
        j.note("100-%d" % i, "x")
    assert len(j) == 3


def test_fulfilled_timeline_kept_then_evicted_by_age():
    j, clock = journal(max_age=600)
    j.set_reason("100-1", "p/a", why.FULFILLED, "nodes 7")
    j.set_reason("100-2", "p/a", why.LAUNCHING, "node 8 attempt 1")
    clock.advance(500)
    # Still pending: its pool keeps looking at it.
    j.set_reason("100-2", "p/a", why.LAUNCHING, "node 8 attempt 1")
    clock.advance(99)
    assert j.describe("100-1")["reason"] == why.FULFILLED
    clock.advance(2)  # 601 s after it was fulfilled
    assert j.describe("100-1") is None
    assert j.reason("100-2")["reason"] == why.LAUNCHING
    assert len(j) == 1


def test_waiting_lists_only_what_the_pool_wants_to_serve():
    j, clock = journal()
    j.set_reason("100-3", "p/a", why.PAUSED_QUOTA, "max-servers")
    j.set_reason("100-1", "p/a", why.LAUNCHING, "node 1 attempt 2")
    j.set_reason("100-2", "p/a", why.LABEL_NOT_SERVED, "no label x")
    j.set_reason("100-4", "p/b", why.PAUSED_QUOTA, "cores")
    j.set_reason("100-5", "p/a", why.TENANT_LIMIT, "tenant t: cores")
    active = {"100-1", "100-2", "100-3", "100-4"}  # 100-5 is gone
    assert j.waiting("p/a", active) == {
        "100-1": "launching: node 1 attempt 2",
        "100-3": "paused-quota: max-servers"}
    assert list(j.waiting("p/a", active, limit=1)) == ["100-1"]


def test_publisher_writes_changes_at_most_every_interval():
    clock = Clock()
    publisher = why.WaitingPublisher(interval=5, clock=clock)
    assert publisher.offer({}) is None  # nothing to say, nothing written
    assert publisher.offer({"1": "a"}) == {"1": "a"}
    assert publisher.offer({"1": "b"}) is None  # too soon
    assert not publisher.due()
    clock.advance(5)
    assert publisher.offer({"1": "a"}) is None  # unchanged
    assert publisher.offer({"1": "b"}) == {"1": "b"}
    assert publisher.published == {"1": "b"}


def test_summarize_and_codes():
    assert why.summarize([]) is None
    assert why.summarize(["label-not-served: x", "paused-quota: cores",
                          "yielded: y"]) == "paused-quota: cores"
    assert why.summarize(["something-new: z", "declined: d"]) == \
        "declined: d"
    assert why.code_of("paused-quota: max-servers") == "paused-quota"
    assert why.Reason("fulfilled", "").short() == "fulfilled"
    assert why.describe_limits([]) == "quota"


def test_many_threads_stay_within_bounds():
    j, clock = journal(max_requests=50, max_events=10)

    def writer(n):
        for i in range(300):
            j.set_reason("r-%d-%d" % (n, i % 80), "p/%d" % n,
                         why.LAUNCHING, "attempt %d" % i)
            j.note("r-%d-%d" % (n, i % 80), "event %d" % i)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(j) == 50
    for i in range(80):
        described = j.describe("r-0-%d" % i)
        if described is not None:
            assert len(described["timeline"]) <= 10


class FakeQuota:
    def __init__(self, limits=None, error=None):
        self.limits = limits or []
        self.error = error

    def exhausted_limits(self, label_name, pool):
        if self.error:
            raise self.error
        return self.limits


class FakeLog:
    def debug(self, *args, **kwargs):
        pass


def launch(attempts=1, scan=None, complete=False):
    return types.SimpleNamespace(attempts=attempts, scan=scan,
                                 complete=complete)


def test_trace_follows_a_request_through_its_handler():
    j, clock = journal(max_age=100)
    trace = why.RequestTrace(j, "100-1", "p/a")
    node = types.SimpleNamespace(id="0007", state="building")
    slots, launchers = [node, None], {0: launch()}
    trace.observe(slots, launchers, paused=False)
    assert j.reason("100-1")["detail"] == "node 0007 attempt 1 (building)"
    launchers[0].attempts = 2
    trace.observe(slots, launchers, paused=False)
    assert j.reason("100-1")["detail"] == "node 0007 attempt 2 (building)"
    trace.paused(FakeQuota(["max-servers", "cloud quota (cores)"]), None,
                 "small", FakeLog())
    assert j.reason("100-1")["detail"] == \
        "max-servers, cloud quota (cores) (no room for small)"
    # While paused, every pass keeps the request from ageing out.
    for _ in range(3):
        clock.advance(60)
        trace.observe(slots, launchers, paused=True)
    assert j.reason("100-1")["reason"] == why.PAUSED_QUOTA
    trace.unpaused()
    launchers[0].scan = object()
    trace.observe(slots, launchers, paused=False)
    assert j.reason("100-1") == {
        "reason": why.WAITING_NODE, "detail": "node 0007: host-key scan",
        "pool": "p/a", "since": clock.now}
    node.state = "ready"
    launchers[0].complete = True
    trace.observe(slots, launchers, paused=False)
    events = [e["event"] for e in j.describe("100-1")["timeline"]]
    assert events == [
        "node 0007: building",
        "launching: node 0007 attempt 1 (building)",
        "launching: node 0007 attempt 2 (building)",
        "paused-quota: max-servers, cloud quota (cores) (no room for small)",
        "unpaused: room for every node",
        "waiting-node: node 0007: host-key scan",
        "node 0007: ready"]


def test_trace_pause_without_known_limit():
    j, clock = journal()
    trace = why.RequestTrace(j, "100-1", "p/a")
    trace.paused(FakeQuota(error=RuntimeError("cloud down")), None, "big",
                 FakeLog())
    assert j.reason("100-1")["detail"] == "quota (no room for big)"
