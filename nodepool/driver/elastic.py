# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""A worker pool sized from the API rate and the calls' latency.

A cloud call that takes longer than the rate limiter's spacing (an EC2
RunInstances takes over a second; at ``rate: 10`` one may start every
0.1 s) needs several threads to keep the limiter busy: about ``rate *
latency`` of them.  A pool of fixed size caps the launch rate below the
configured API rate when the cloud is slow, and wastes threads when it
is fast.  :class:`ElasticExecutor` asks a target function for its size
whenever work arrives: it starts a thread when work waits and no thread
is free, up to that size, and a thread that found no work for
``idle_timeout`` seconds ends, down to ``minimum``.
:func:`limiter_target` is the usual target: what the rate limiter has
measured (:meth:`~nodepool.driver.ratelimit.RateLimiter.concurrency`).
"""

import concurrent.futures
import itertools
import logging
import math
import queue
import threading
import time
from typing import Callable

log = logging.getLogger("nodepool.driver.elastic")

#: Threads an elastic pool never grows beyond, whatever rate and latency.
MAX_WORKERS = 64
#: Seconds a thread waits for work before it ends (above ``minimum``).
IDLE_TIMEOUT = 60.0
#: Seconds between the looks of an idle thread of a pool above its target.
SHRINK_POLL = 1.0
#: More threads than rate times latency, for calls slower than average.
HEADROOM = 1.25
# What a thread's wait for work gives when none came.
_NO_WORK = object()


def limiter_target(limiter, default: int,
                   maximum: int = MAX_WORKERS) -> Callable[[], int]:
    """A size function for :class:`ElasticExecutor`: enough threads to
    keep ``limiter`` busy at its current rate with the latency it has
    measured (plus :data:`HEADROOM`), never fewer than ``default`` (the
    size before anything was measured) nor more than ``maximum``."""
    def target() -> int:
        wanted = limiter.concurrency()
        if wanted is None:
            return default
        return min(maximum, max(default, math.ceil(wanted * HEADROOM)))
    return target


def fixed_target(size: int) -> Callable[[], int]:
    """A size function for a pool of ``size`` threads at most."""
    return lambda: size


class ElasticExecutor(concurrent.futures.Executor):
    """A :class:`concurrent.futures.Executor` whose thread count follows
    ``target()`` (see the module docstring).

    ``target`` is called with the pool's lock held, on every submit: it
    must be cheap and must not submit.  Threads are named
    ``<name>-<n>``.  :meth:`shutdown` behaves as ThreadPoolExecutor's.
    """

    def __init__(self, name: str, target: Callable[[], int],
                 minimum: int = 1, idle_timeout: float = IDLE_TIMEOUT):
        self.name = name
        self.target = target
        self.minimum = max(1, minimum)
        self.idle_timeout = idle_timeout
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        # The live threads (what service.shutdown_executor joins).
        self._threads: set = set()
        self._idle = 0
        self._pending = 0
        self._shutdown = False
        self._numbers = itertools.count(1)

    @property
    def size(self) -> int:
        """Threads alive now."""
        with self._lock:
            return len(self._threads)

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after "
                                   "shutdown")
            self._queue.put((future, fn, args, kwargs))
            self._pending += 1
            self._grow()
        return future

    def _grow(self) -> None:
        """Start threads for waiting work that no idle thread will take,
        up to the target (lock held).  Called on submit, and after each
        call: the target may have grown since the work came (the first
        calls measure the latency it depends on)."""
        wanted = max(self.minimum, self.target())
        while self._pending > self._idle and len(self._threads) < wanted:
            self._spawn()

    def _spawn(self) -> None:
        # Called with the lock held.  The thread counts as idle from now
        # on: it will take waiting work as soon as it runs.
        thread = threading.Thread(
            target=self._work, daemon=True,
            name="%s-%d" % (self.name, next(self._numbers)))
        self._threads.add(thread)
        self._idle += 1
        thread.start()
        log.debug("%s: %d threads", self.name, len(self._threads))

    def _work(self) -> None:
        me = threading.current_thread()
        idle_since = time.monotonic()
        while True:  # idle here
            # Idle threads look every SHRINK_POLL seconds whether the pool
            # is above its target (it shrinks to it at once) or they were
            # idle for the whole idle timeout (down to the minimum).
            try:
                item = self._queue.get(
                    timeout=min(SHRINK_POLL, self.idle_timeout))
            except queue.Empty:
                item = _NO_WORK
            with self._lock:
                if item is None:  # shut down
                    self._idle -= 1
                    self._threads.discard(me)
                    return
                if item is _NO_WORK:
                    over = len(self._threads) > max(self.minimum,
                                                    self.target())
                    bored = time.monotonic() - idle_since >= \
                        self.idle_timeout
                    if (over or bored) and self._leave(me):
                        self._idle -= 1
                        return
                    continue
                self._idle -= 1
                self._pending -= 1
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as e:
                    future.set_exception(e)
                else:
                    future.set_result(result)
            del item, future, fn, args, kwargs
            with self._lock:
                # Smaller wanted (the rate was cut, calls got faster):
                # leave when nothing waits.
                if len(self._threads) > max(self.minimum, self.target()) \
                        and self._leave(me):
                    return
                self._idle += 1
                self._grow()
            idle_since = time.monotonic()

    def _leave(self, me) -> bool:
        """Whether thread ``me`` ends now (lock held): only when no work
        waits that a submit counted on an idle thread for, and not below
        ``minimum`` unless the pool is shut down."""
        if self._pending > 0:
            return False
        if len(self._threads) <= self.minimum and not self._shutdown:
            return False
        self._threads.discard(me)
        return True

    def shutdown(self, wait: bool = True, *,
                 cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        self._pending -= 1
                        item[0].cancel()
            threads = list(self._threads)
            for _ in threads:
                self._queue.put(None)
        if wait:
            for thread in threads:
                thread.join()
