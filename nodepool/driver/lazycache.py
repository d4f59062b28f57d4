# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Caches that keep cloud API calls off the launcher's hot paths.

Adapters answer many questions (what instances exist, what an image or an
instance type looks like, what the account quota is) from data that changes
slowly but is expensive and rate limited to fetch.
:class:`SingleFlightTTLCache` covers keyed lookups: a miss blocks, but any
number of threads missing the same key share one cloud call.  ("List
everything" calls go through :mod:`nodepool.driver.listing` instead.)
"""

import functools
import threading
import time
from typing import Any, Callable, Hashable, Optional

import cachetools
import cachetools.keys


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
