# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The one shape of the daemons' threads.

Every long-running loop of the launcher and the builder is a
:class:`ServiceThread`: a named daemon thread with a stop event and a wake
event.  Its owner calls :meth:`~ServiceThread.start`, later
:meth:`~ServiceThread.stop` (never blocks, so an owner can ask all its
threads to stop before it waits for any) and then
:meth:`~ServiceThread.join` with a timeout.  An error in a pass is logged
and the loop goes on; a loop that escapes with an error is logged and
started again: no thread dies silently.

Work that runs once, off the caller's thread (fetching a console log,
warming caches, retiring a provider), goes to a :class:`TaskThreads` of
the object that owns it, which joins what is left when it stops.
"""

import concurrent.futures
import logging
import threading
import time
from typing import Callable, List, Optional


class ServiceThread:
    """A named daemon thread running a loop until :meth:`stop`.

    By default the loop calls :meth:`run_once` every ``interval`` seconds,
    or as soon as :meth:`wake` is called (a wake during a pass runs
    another pass right after it).  :meth:`run_once` may return the delay
    before the next pass instead.  A thread that waits on something else
    (a queue, an election) overrides :meth:`loop` and returns when
    :attr:`stopping`; :meth:`on_stop` is where it unblocks that wait.

    :param name: the thread's name (also in log messages).
    :param interval: seconds between passes.
    :param log: the logger for errors (default ``nodepool.<name>``).
    """

    def __init__(self, name: str, interval: float = 1.0,
                 log: Optional[logging.Logger] = None):
        self.name = name
        self.interval = interval
        self.log = log or logging.getLogger("nodepool.%s" % name)
        self._stop_event = threading.Event()
        self._wake_event = threading.Event()
        #: Passes of the default loop run so far (observability: a caller
        #: can tell that a pass happened after some event).
        self.passes = 0
        self._thread = threading.Thread(target=self._main, name=name,
                                        daemon=True)

    # Owner's side -------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Run a pass as soon as the current one (if any) is done.

        Never blocks; safe from any thread, also from library callbacks.
        """
        self._wake_event.set()

    def stop(self) -> None:
        """Ask the loop to end; never blocks (see :meth:`join`).

        Idempotent; also fine for a thread that was never started.
        """
        self._stop_event.set()
        self._wake_event.set()
        try:
            self.on_stop()
        except Exception:
            self.log.exception("Error stopping %s", self.name)

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait up to ``timeout`` seconds for the thread to end.

        Returns True when it has ended (or never started); a thread still
        running after the timeout is logged.
        """
        if self._thread.ident is None:
            return True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.log.warning("%s did not stop within %s seconds",
                             self.name, timeout)
            return False
        return True

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop_event.is_set()

    # The thread's side --------------------------------------------------

    def wait(self, timeout: Optional[float]) -> bool:
        """Sleep up to ``timeout`` seconds or until woken or stopped;
        returns :attr:`stopping`.  Clears the wake-up it returned on."""
        self._wake_event.wait(timeout)
        self._wake_event.clear()
        return self.stopping

    def run_once(self) -> Optional[float]:
        """One pass of the default loop; may return the next delay."""
        raise NotImplementedError

    def on_error(self, error: Exception) -> Optional[float]:
        """Called with an error that escaped :meth:`run_once`; logs it.

        May return the delay before the next pass (default ``interval``).
        """
        self.log.exception("Error in %s pass", self.name)
        return None

    def on_stop(self) -> None:
        """Called by :meth:`stop` (on the caller's thread): unblock what
        :meth:`loop` waits on.  Must not block."""

    def loop(self) -> None:
        """Call :meth:`run_once` until stopped."""
        while not self.stopping:
            self._wake_event.clear()
            try:
                delay = self.run_once()
            except Exception as e:
                delay = self.on_error(e)
            self.passes += 1
            if self.stopping:
                return
            delay = self.interval if delay is None else delay
            if delay > 0:
                self._wake_event.wait(delay)

    def finish(self) -> None:
        """Called on the thread once the loop has ended (also after a
        crash during stop); for cleanup that belongs to the thread."""

    def _main(self) -> None:
        try:
            while True:
                try:
                    self.loop()
                    return
                except Exception:
                    # loop() itself must not end by an error: say so, and
                    # start it again rather than lose the thread.
                    self.log.exception("%s crashed; restarting its loop",
                                       self.name)
                if self.stopping or self._stop_event.wait(
                        max(self.interval, 0.1)):
                    return
        finally:
            try:
                self.finish()
            except Exception:
                self.log.exception("Error finishing %s", self.name)


class TaskThreads:
    """Short-lived threads of one owner.

    :meth:`spawn` runs a function in a named daemon thread; errors are
    logged.  Finished threads are forgotten at each :meth:`spawn` and
    :meth:`join`, so the list never grows with the work done.  After
    :meth:`stop` nothing new starts; :meth:`join` waits for the rest.
    Thread-safe.
    """

    def __init__(self, log: logging.Logger):
        self.log = log
        self._lock = threading.Lock()
        self._threads: List[threading.Thread] = []
        self._stopped = False

    def spawn(self, name: str, func: Callable, *args
              ) -> Optional[threading.Thread]:
        """Run ``func(*args)`` in a new thread named ``name``; returns it,
        or None after :meth:`stop` (the function is not run then)."""
        def run():
            try:
                func(*args)
            except Exception:
                self.log.exception("Error in %s", name)

        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            if self._stopped:
                self.log.debug("Not starting %s: stopping", name)
                return None
            thread = threading.Thread(target=run, name=name, daemon=True)
            self._threads.append(thread)
            # Started under the lock: join() never sees an unstarted one.
            thread.start()
        return thread

    def alive(self) -> List[threading.Thread]:
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            return list(self._threads)

    def stop(self) -> None:
        """Start nothing new; never blocks."""
        with self._lock:
            self._stopped = True

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait up to ``timeout`` seconds in all for the running threads;
        True if none is left."""
        return join_all(self.alive(), timeout, self.log)


def join_all(threads, timeout: Optional[float],
             log: logging.Logger) -> bool:
    """Join ``threads`` (anything with ``join(timeout)`` and
    ``is_alive()``) within ``timeout`` seconds in all; logs the ones left
    running and returns whether none is."""
    deadline = None if timeout is None else time.monotonic() + timeout
    left = []
    for thread in threads:
        remaining = None if deadline is None else max(
            0.0, deadline - time.monotonic())
        thread.join(remaining)
        if thread.is_alive():
            left.append(thread)
    for thread in left:
        log.warning("Thread %s did not stop within %s seconds",
                    getattr(thread, "name", thread), timeout)
    return not left


def shutdown_executor(executor: concurrent.futures.Executor,
                      timeout: Optional[float],
                      log: logging.Logger) -> bool:
    """Cancel the queued work of ``executor`` and wait up to ``timeout``
    seconds for its threads (running calls finish); True if none is left.

    ``Executor.shutdown(wait=True)`` has no timeout, and a cloud call may
    hang: the worker threads are joined one by one instead (the standard
    library's ThreadPoolExecutor and our
    :class:`~nodepool.driver.elastic.ElasticExecutor` keep them in
    ``_threads``).
    """
    executor.shutdown(wait=False, cancel_futures=True)
    threads = list(getattr(executor, "_threads", ()))
    return join_all(threads, timeout, log)
