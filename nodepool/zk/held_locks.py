# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Whether somebody holds a request's lock, remembered between passes.

The lost-request cleanup asks this of every pending request it does not
handle itself, every minute.  Most of them are held by another launcher
for their whole life; reading each lock directory on every pass would cost
an idle launcher one read per pending request per minute.
:class:`HeldRequestLocks` reads a lock directory once, with a child watch,
and trusts a "held" answer until the watch says the directory changed or
the session that set the watch is gone.
"""

import threading
from typing import Iterable

from kazoo.exceptions import NoNodeError

from nodepool.zk import paths
from nodepool.zk.client import ZooKeeperClient


class HeldRequestLocks:
    """Remembered answers to "is this request's lock held?".

    Only "held" is remembered: a free lock is what the caller acts on (it
    locks the request itself), so it is always read again.

    Thread-safety: :meth:`is_held` and :meth:`retain` are meant for one
    thread; the watch callback (kazoo's event thread) only drops entries.

    :param zk_client: the connected client; its session generation tells
        when the watches are gone.
    """

    def __init__(self, zk_client: ZooKeeperClient):
        self._zk = zk_client
        self._lock = threading.Lock()
        self._held: set = set()
        # Ids whose watch fired since their read started: the answer of
        # that read may be stale already and is not remembered.
        self._changed: set = set()
        self._generation = zk_client.session_generation
        #: Lock directories read so far (a test proves repeated questions
        #: cost nothing).
        self.reads = 0

    def is_held(self, request_id: str) -> bool:
        """Whether anybody (this process included) holds the lock of
        ``request_id``: a snapshot, as
        :meth:`~nodepool.zk.requests.RequestStore.is_request_locked`.

        :raises kazoo.exceptions.KazooException: connection errors.
        """
        generation = self._zk.session_generation
        with self._lock:
            if generation != self._generation:
                # A new session: the old one's watches will never fire.
                self._held.clear()
                self._generation = generation
            if request_id in self._held:
                return True
            self._changed.discard(request_id)
        self.reads += 1
        try:
            children = self._zk.kazoo.get_children(
                paths.request_lock_path(request_id), watch=self._on_change)
        except NoNodeError:
            return False  # no directory: nothing to watch, nobody holds it
        held = any(paths.lock_contender_sequence(name) is not None
                   for name in children)
        with self._lock:
            if held and request_id not in self._changed \
                    and generation == self._zk.session_generation:
                self._held.add(request_id)
        return held

    def retain(self, request_ids: Iterable[str]) -> None:
        """Forget every request but ``request_ids`` (those still asked
        about)."""
        keep = set(request_ids)
        with self._lock:
            self._held &= keep
            self._changed &= keep

    def _on_change(self, event) -> None:
        # Kazoo's event thread: only drop the entry.  Events without a
        # path (session state) are covered by the generation check.
        if not event.path:
            return
        request_id = event.path.rstrip("/").rpartition("/")[2]
        with self._lock:
            self._held.discard(request_id)
            self._changed.add(request_id)
