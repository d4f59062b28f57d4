# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Caches that keep cloud API calls off the launcher's hot paths.

Adapters answer many questions (what instances exist, what an image or an
instance type looks like, what the account quota is) from data that changes
slowly but is expensive and rate limited to fetch.  Two caches cover the
two patterns:

* :class:`LazyExecutorTTLCache` for "list everything" calls that state
  machines poll constantly: callers always get an answer at once, possibly
  a stale one, while a refresh runs in the background.
* :class:`SingleFlightTTLCache` for keyed lookups: a miss blocks, but any
  number of threads missing the same key share one cloud call.
"""

import functools
import logging
import threading
import time
from typing import Any, Callable, Hashable, Optional

import cachetools
import cachetools.keys

_log = logging.getLogger("nodepool.driver.lazycache")

_NO_VALUE = object()


class LazyExecutorTTLCache:
    """Decorator caching an argument-less (list) call, refreshed lazily.

    The first call runs the function synchronously and raises whatever it
    raises; concurrent first callers wait for it and use its value (if it
    fails, each of them tries in turn, one at a time).  Later
    calls return the cached value at once.  When the value is older than
    ``ttl`` seconds (measured from the start of the call that fetched it),
    one refresh is submitted to ``executor`` and the stale value keeps being
    returned until the refresh has finished; there is never more than one
    refresh queued or running.  A failing refresh is logged and the old
    value kept, so the next call tries again.

    Arguments of the decorated function are passed through but ignored for
    keying: there is one cached value per decorated function.  Decorate a
    bound method per instance (``self.list = LazyExecutorTTLCache(...)(
    self._list)``), not a method in the class body, or all instances share
    one value.  The wrapper's ``cache`` attribute is this object.

    Thread-safe.  ``timer`` exists for tests (default
    :func:`time.monotonic`).
    """

    def __init__(self, ttl: float, executor, *,
                 timer: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.executor = executor
        self._timer = timer
        # Guards the fields below; never held while the function runs.
        self._lock = threading.Lock()
        # Serializes the synchronous first load.
        self._first_load_lock = threading.Lock()
        self._value: Any = _NO_VALUE
        self._fetched_at = -float("inf")
        self._refreshing = False
        # Bumped by invalidate(), so that a refresh which began before an
        # invalidation does not mark its result as fresh.
        self._generation = 0

    def __call__(self, func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            return self._get(func, args, kwargs)
        wrapper.cache = self
        return wrapper

    def invalidate(self) -> None:
        """Treat the cached value as expired; the next call refreshes it.

        The stale value is still returned until that refresh finishes.
        """
        with self._lock:
            self._fetched_at = -float("inf")
            self._generation += 1

    def _get(self, func, args, kwargs):
        with self._lock:
            value = self._value
            if value is _NO_VALUE:
                refresh = False
            else:
                refresh = (not self._refreshing and
                           self._timer() - self._fetched_at > self.ttl)
                # Claimed under the lock so that only one caller submits.
                self._refreshing = self._refreshing or refresh
        if value is _NO_VALUE:
            return self._first_load(func, args, kwargs)
        if refresh:
            # Submitted outside the lock: an executor may run the task
            # inline, and the task takes the lock itself.
            self._submit_refresh(func, args, kwargs)
        return value

    def _first_load(self, func, args, kwargs):
        with self._first_load_lock:
            with self._lock:
                if self._value is not _NO_VALUE:
                    # Another thread loaded it while we waited.
                    return self._value
                generation = self._generation
            started = self._timer()
            value = func(*args, **kwargs)
            with self._lock:
                self._store(value, started, generation)
            return value

    def _submit_refresh(self, func, args, kwargs):
        try:
            self.executor.submit(self._refresh, func, args, kwargs)
        except Exception:
            # For example an executor that is shutting down; serve the
            # stale value and let a later call try again.
            _log.exception("Unable to submit refresh of %s",
                           getattr(func, "__qualname__", func))
            with self._lock:
                self._refreshing = False

    def _store(self, value, started, generation):
        # Called with self._lock held.
        self._value = value
        if generation == self._generation:
            self._fetched_at = started

    def _refresh(self, func, args, kwargs):
        with self._lock:
            generation = self._generation
        started = self._timer()
        try:
            value = func(*args, **kwargs)
        except Exception:
            _log.exception("Refresh of %s failed; keeping the cached value",
                           getattr(func, "__qualname__", func))
            with self._lock:
                self._refreshing = False
            return
        with self._lock:
            self._store(value, started, generation)
            self._refreshing = False


class _Flight:
    """One in-progress load that other callers of the same key wait on."""

    __slots__ = ("done", "value", "error", "cacheable", "waiters")

    def __init__(self):
        self.done = threading.Event()
        # Callers blocked on this load besides the one running it.
        self.waiters = 0
        self.value: Any = None
        self.error: Optional[BaseException] = None
        # Cleared by invalidate() so that a load that began before the
        # invalidation does not put an outdated answer into the cache.
        self.cacheable = True


class SingleFlightTTLCache:
    """A TTL cache whose concurrent misses for one key share one load.

    ``get(key, loader)`` returns the cached value for ``key`` or calls
    ``loader()`` to produce it.  While a load is in progress, every other
    caller of the same key blocks and then receives the same value or has
    the same exception raised.  Values expire ``ttl`` seconds after they
    were stored; at most ``maxsize`` entries are kept (least recently used
    dropped first).  Exceptions are never cached: the next caller after a
    failure loads again.

    Also usable as a decorator: the key is built from the call's arguments
    (:func:`cachetools.keys.hashkey`, so they must be hashable), and the
    wrapper's ``cache`` attribute is this object.

    Thread-safe; loaders run without any lock of the cache held, so loads
    of different keys proceed in parallel.  ``timer`` exists for tests
    (default :func:`time.monotonic`).
    """

    def __init__(self, ttl: float, maxsize: int = 1024, *,
                 timer: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.maxsize = maxsize
        self._cache = cachetools.TTLCache(maxsize=maxsize, ttl=ttl,
                                          timer=timer)
        self._lock = threading.Lock()
        self._flights: dict = {}

    def get(self, key: Hashable, loader: Callable[[], Any]) -> Any:
        """The value for ``key``, loading it with ``loader()`` on a miss.

        Raises what the loader raised (in every thread that waited on it).
        """
        with self._lock:
            try:
                return self._cache[key]
            except KeyError:
                pass
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = _Flight()
                self._flights[key] = flight
            else:
                flight.waiters += 1
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            flight.value = loader()
        except BaseException as e:
            flight.error = e
            raise
        finally:
            with self._lock:
                if flight.error is None and flight.cacheable:
                    self._cache[key] = flight.value
                if self._flights.get(key) is flight:
                    del self._flights[key]
            # Wake waiters only once the cache is consistent, so a waiter
            # that calls get() again finds the value.
            flight.done.set()
        return flight.value

    def invalidate(self, key: Optional[Hashable] = None) -> None:
        """Drop ``key`` (or, with no key, everything) from the cache.

        A load already in progress for a dropped key still answers the
        callers waiting on it, but its result is not cached, and callers
        arriving after the invalidation start a fresh load.
        """
        with self._lock:
            if key is None:
                self._cache.clear()
                flights = list(self._flights.values())
                self._flights.clear()
            else:
                self._cache.pop(key, None)
                flight = self._flights.pop(key, None)
                flights = [flight] if flight is not None else []
            for flight in flights:
                flight.cacheable = False

    def waiting(self, key: Hashable) -> int:
        """How many callers wait on the load of ``key`` now in progress.

        The caller running the load is not counted; 0 when no load runs.
        Meant for tests and debugging.
        """
        with self._lock:
            flight = self._flights.get(key)
            return flight.waiters if flight is not None else 0

    def __len__(self) -> int:
        with self._lock:
            # Expired entries linger in TTLCache until the next mutation.
            self._cache.expire()
            return len(self._cache)

    def __call__(self, func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            key = cachetools.keys.hashkey(*args, **kwargs)
            return self.get(key, lambda: func(*args, **kwargs))
        wrapper.cache = self
        return wrapper
