# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
import concurrent.futures
import threading

import pytest

from nodepool.driver.lazycache import SingleFlightTTLCache
from tests.fixtures.waits import wait_for

TIMEOUT = 30


class FakeTimer:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class ManualExecutor:
    """Holds submitted tasks until the test runs them."""

    def __init__(self):
        self.tasks = []
        self.shut_down = False

    def submit(self, fn, *args, **kwargs):
        if self.shut_down:
            raise RuntimeError("cannot schedule new futures after shutdown")
        self.tasks.append((fn, args, kwargs))

    def run_all(self):
        tasks, self.tasks = self.tasks, []
        for fn, args, kwargs in tasks:
            fn(*args, **kwargs)


class InlineExecutor:
    """Runs each task at once, in the submitting thread."""

    def submit(self, fn, *args, **kwargs):
        fn(*args, **kwargs)


class Lister:
    """A list call whose results are numbered by call."""

    def __init__(self):
        self.calls = 0
        self.fail = False
        self.lock = threading.Lock()

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.calls += 1
            n = self.calls
        if self.fail:
            raise RuntimeError("list failed")
        return ["result-%d" % n]


@pytest.fixture
def pool():
    executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=2, thread_name_prefix="test-lazycache")
    yield executor
    executor.shutdown(wait=True)


# SingleFlightTTLCache


class BlockingLoader:
    """A loader that blocks until released and counts its calls."""

    def __init__(self, result="value", error=None):
        self.calls = 0
        self.lock = threading.Lock()
        self.started = threading.Event()
        self.release = threading.Event()
        self.result = result
        self.error = error

    def __call__(self):
        with self.lock:
            self.calls += 1
        self.started.set()
        assert self.release.wait(TIMEOUT)
        if self.error is not None:
            raise self.error
        return self.result


def run_concurrently(n, fn):
    """Start n threads running fn; return (threads, outcomes list)."""
    outcomes = []
    lock = threading.Lock()

    def target():
        try:
            result = ("ok", fn())
        except Exception as e:
            result = ("error", e)
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=target, name="single-flight-%d" % i)
               for i in range(n)]
    for t in threads:
        t.start()
    return threads, outcomes


def join_all(threads):
    for t in threads:
        t.join(TIMEOUT)
        assert not t.is_alive()


def test_single_flight_coalesces_concurrent_misses():
    cache = SingleFlightTTLCache(ttl=60)
    result = object()
    loader = BlockingLoader(result=result)
    threads, outcomes = run_concurrently(10, lambda: cache.get("k", loader))
    assert loader.started.wait(TIMEOUT)
    wait_for(lambda: cache.waiting("k") == 9, timeout=TIMEOUT)
    loader.release.set()
    join_all(threads)
    assert loader.calls == 1
    assert len(outcomes) == 10
    assert all(kind == "ok" and value is result for kind, value in outcomes)
    assert cache.waiting("k") == 0
    # Now cached.
    assert cache.get("k", BlockingLoader(result="other")) is result


def test_single_flight_error_reaches_all_waiters_and_is_not_cached():
    cache = SingleFlightTTLCache(ttl=60)
    error = RuntimeError("describe_images failed")
    loader = BlockingLoader(error=error)
    threads, outcomes = run_concurrently(10, lambda: cache.get("k", loader))
    assert loader.started.wait(TIMEOUT)
    wait_for(lambda: cache.waiting("k") == 9, timeout=TIMEOUT)
    loader.release.set()
    join_all(threads)
    assert loader.calls == 1
    assert [kind for kind, _ in outcomes] == ["error"] * 10
    assert all(value is error for _, value in outcomes)
    assert len(cache) == 0
    # The next caller loads again.
    assert cache.get("k", lambda: "recovered") == "recovered"


def test_single_flight_different_keys_load_in_parallel():
    cache = SingleFlightTTLCache(ttl=60)
    a = BlockingLoader(result="a")
    b = BlockingLoader(result="b")
    threads_a, out_a = run_concurrently(1, lambda: cache.get("a", a))
    threads_b, out_b = run_concurrently(1, lambda: cache.get("b", b))
    # Both loaders are running at the same time.
    assert a.started.wait(TIMEOUT)
    assert b.started.wait(TIMEOUT)
    a.release.set()
    b.release.set()
    join_all(threads_a + threads_b)
    assert out_a == [("ok", "a")] and out_b == [("ok", "b")]


def test_single_flight_expiry():
    timer = FakeTimer()
    cache = SingleFlightTTLCache(ttl=5, timer=timer)
    calls = []

    def loader():
        calls.append(timer.now)
        return len(calls)

    assert cache.get("k", loader) == 1
    timer.now = 4.9
    assert cache.get("k", loader) == 1
    timer.now = 5.1
    assert cache.get("k", loader) == 2
    assert calls == [0.0, 5.1]
    timer.now = 100
    assert len(cache) == 0


def test_single_flight_maxsize():
    cache = SingleFlightTTLCache(ttl=60, maxsize=2)
    for key in "abc":
        cache.get(key, lambda: key)
    assert len(cache) == 2


def test_single_flight_invalidate():
    cache = SingleFlightTTLCache(ttl=60)
    counter = iter(range(100))
    cache.get("a", lambda: next(counter))
    cache.get("b", lambda: next(counter))
    cache.invalidate("a")
    assert cache.get("a", lambda: next(counter)) == 2
    assert cache.get("b", lambda: next(counter)) == 1
    cache.invalidate()
    assert len(cache) == 0
    assert cache.get("b", lambda: next(counter)) == 3
    cache.invalidate("missing")


def test_single_flight_invalidate_during_load_is_not_cached():
    cache = SingleFlightTTLCache(ttl=60)
    loader = BlockingLoader(result="outdated")
    threads, outcomes = run_concurrently(1, lambda: cache.get("k", loader))
    assert loader.started.wait(TIMEOUT)
    cache.invalidate("k")
    # A caller arriving after the invalidation starts its own load.
    assert cache.waiting("k") == 0
    assert cache.get("k", lambda: "fresh") == "fresh"
    loader.release.set()
    join_all(threads)
    assert outcomes == [("ok", "outdated")]
    assert cache.get("k", lambda: "unused") == "fresh"


def test_single_flight_decorator():
    cache = SingleFlightTTLCache(ttl=60)
    calls = []

    @cache
    def describe(image_id, region="us-east-1"):
        calls.append((image_id, region))
        return {"id": image_id, "region": region}

    assert describe("ami-1") == {"id": "ami-1", "region": "us-east-1"}
    assert describe("ami-1") == {"id": "ami-1", "region": "us-east-1"}
    assert describe("ami-2", region="eu-west-1")["region"] == "eu-west-1"
    assert calls == [("ami-1", "us-east-1"), ("ami-2", "eu-west-1")]
    assert describe.cache is cache
    assert describe.__name__ == "describe"
    cache.invalidate()
    describe("ami-1")
    assert len(calls) == 3
