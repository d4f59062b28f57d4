# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The launchers' election of the one launcher that emits global gauges."""

import logging
import os
import socket
import threading
from typing import Any, Callable, List, Optional

from kazoo.protocol.states import KazooState

from nodepool.zk import paths
from nodepool.zk.client import ZooKeeperClient

log = logging.getLogger("nodepool.zk.election")


class StatsElection:
    """The launchers' election for who emits the global gauges.

    A thin layer over kazoo's ``Election`` at ``/nodepool/elections/stats``.
    :meth:`run` blocks until this process is elected, then calls the leader
    function, which must return once :meth:`wait` reports that leadership
    ended: either :meth:`cancel` was called or the ZooKeeper session was
    lost (its ephemeral election znode is gone, so another launcher may
    already lead).

    Typical use from a dedicated thread::

        election = StatsElection(zk_client)
        def lead():
            while not election.wait(interval):
                emit_gauges()
        while not stopping:
            election.run(lead)

    Thread-safety: :meth:`cancel` and :meth:`wait` may be called from any
    thread; :meth:`run` from one thread at a time.
    """

    def __init__(self, zk_client: ZooKeeperClient,
                 identifier: Optional[str] = None):
        self._zk = zk_client
        self.identifier = identifier or "%s-%d" % (socket.gethostname(),
                                                   os.getpid())
        self._lock = threading.Lock()
        self._election = None
        self._ended = threading.Event()
        self._leading = False
        self._cancelled = False
        self._zk.add_state_listener(self._on_state)

    @property
    def is_leader(self) -> bool:
        """True while the leader function runs and leadership holds."""
        return self._leading and not self._ended.is_set()

    def run(self, func: Callable[..., Any], *args: Any,
            **kwargs: Any) -> bool:
        """Contend; once elected call ``func(*args, **kwargs)``.

        Returns True when ``func`` ran (leadership is given up when it
        returns), False when cancelled before being elected.  Exceptions of
        ``func`` propagate after the election znode was removed.

        :raises kazoo.exceptions.KazooException: ZooKeeper errors while
            contending.
        """
        ran = []

        def lead():
            self._leading = True
            ran.append(True)
            try:
                func(*args, **kwargs)
            finally:
                self._leading = False

        with self._lock:
            if self._cancelled:
                self._cancelled = False
                return False
            self._ended.clear()
            self._election = self._zk.kazoo.Election(
                paths.STATS_ELECTION, self.identifier)
        try:
            self._election.run(lead)
        finally:
            with self._lock:
                self._election = None
                self._cancelled = False
        return bool(ran)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait up to ``timeout`` for leadership to end; True if it did."""
        return self._ended.wait(timeout)

    def cancel(self) -> None:
        """Stop contending, or end the current leadership.

        A :meth:`run` that has not started yet returns False at once.
        """
        with self._lock:
            self._ended.set()
            if self._election is not None:
                self._election.cancel()
            else:
                self._cancelled = True

    def contenders(self) -> List[str]:
        """Identifiers of all contenders, the leader first."""
        return self._zk.kazoo.Election(
            paths.STATS_ELECTION, self.identifier).contenders()

    def close(self) -> None:
        """Cancel and stop listening to connection changes."""
        self.cancel()
        self._zk.remove_state_listener(self._on_state)

    def _on_state(self, state: KazooState) -> None:
        # The election znode is ephemeral: once the session is lost
        # somebody else may lead, so the leader function must stop.
        if state == KazooState.LOST and self._leading:
            log.warning("Lost the stats election with the session")
            self._ended.set()
