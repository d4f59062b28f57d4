# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Node request operations and the request state rules.

Requests live at ``/nodepool/requests/<prio>-<seq>``; their locks live in a
separate tree, ``/nodepool/requests-lock/<id>``, so that a consumer deleting
a request does not pull the lock from under the launcher working on it.
The price is that lock directories outlive their requests; the launcher's
cleanup removes them with :meth:`RequestStore.delete_request_lock`.

Every state transition a launcher makes (accept, decline, fulfil, requeue)
is a method here, so the rules live in one place.  These methods require
the caller to hold the request lock and write the request immediately.

Thread-safety: a :class:`RequestStore` has no mutable state and may be
shared by threads; a :class:`~nodepool.zk.models.NodeRequest` object must
be used by one thread at a time.  Nothing here may run in a kazoo callback.
"""

import logging
import uuid
from typing import Iterable, Iterator, Optional, Union

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NoNodeError

from nodepool.exceptions import InvalidRecordError
from nodepool.zk import locks
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.invalid import InvalidRecordLog
from nodepool.zk.models import NodeRequest, RequestState
from nodepool.zk.paths import (
    PRIORITY_DEFAULT,
    REQUEST_ROOT,
    request_lock_path,
    request_path,
    request_prefix,
)
from nodepool.zk.recordstore import own_change
from nodepool.zk.request_locks import GivenUp, RequestLocking

log = logging.getLogger("nodepool.zk.requests")


class RequestStore(RequestLocking):
    """Node request operations on one ZooKeeper connection.

    :param zk_client: a connected :class:`ZooKeeperClient`.
    :param cache: optional request tree cache (``get(id)``, ``values()``);
        without one every read goes to ZooKeeper.
    """

    def __init__(self, zk_client: ZooKeeperClient, cache=None):
        self.zk_client = zk_client
        self.cache = cache
        # Each bad record is logged once per version by this store.
        self.invalid_log = InvalidRecordLog()
        self._given_up = GivenUp()

    @property
    def kazoo(self) -> KazooClient:
        return self.zk_client.kazoo

    # Submitting and reading ---------------------------------------------

    def submit_request(self, request: NodeRequest,
                       priority: Union[str, int] = PRIORITY_DEFAULT,
                       ephemeral: Optional[bool] = None) -> str:
        """Create ``request`` as a new sequential znode; return its id.

        ``priority`` is the three-character id prefix (``"100"`` high …
        ``"900"`` min-ready).  A missing ``event_id`` is generated and an
        unset state becomes ``requested``.  Requests nodepool itself submits
        (min-ready, tests) are ephemeral by default so that they vanish
        with the launcher's session; pass ``ephemeral=False`` to create a
        persistent one as current Zuul does.  Sets ``request.id`` and
        ``request.stat``.

        :raises ValueError: ``request`` already has an id.
        """
        if request.id is not None:
            raise ValueError("request %s was already submitted" % request.id)
        if ephemeral is None:
            ephemeral = True
        if not request.event_id:
            request.event_id = uuid.uuid4().hex
        if request.state is None:
            request.state = RequestState.REQUESTED
        path, stat = self.kazoo.create(
            request_prefix(priority), request.serialize(),
            ephemeral=ephemeral, sequence=True, makepath=True,
            include_data=True)
        request.id = path.rsplit("/", 1)[1]
        request.stat = stat
        return request.id

    def get_request(self, request_id: str,
                    cached: bool = True) -> Optional[NodeRequest]:
        """Return request ``request_id`` or ``None`` if it does not exist.

        A cache hit returns the shared cached object; a miss reads
        ZooKeeper.  Unreadable payloads are logged and yield ``None``.
        """
        if cached and self.cache is not None:
            request = self.cache.get(request_id)
            if request is not None:
                return request
        return self._read_request(request_id)[0]

    def _read_request(self, request_id: str):
        """``(request or None, stat or None)`` straight from ZooKeeper."""
        try:
            data, stat = self.kazoo.get(request_path(request_id))
        except NoNodeError:
            return None, None
        if not data:
            return None, stat
        try:
            return NodeRequest.from_bytes(data, stat=stat,
                                          id=request_id), stat
        except InvalidRecordError as e:
            self.invalid_log.report(log, request_path(request_id), stat,
                                    e, "request")
            return None, stat

    def request_exists(self, request_id: str) -> bool:
        """Whether the request's znode exists, asked of ZooKeeper (never
        the cache, which lags behind deletions).  Errors propagate: a
        connection error is no answer."""
        return self.kazoo.exists(request_path(request_id)) is not None

    def get_request_ids(self) -> list[str]:
        """Ids of all requests in ZooKeeper (never the cache), unsorted."""
        try:
            return self.kazoo.get_children(REQUEST_ROOT)
        except NoNodeError:
            return []

    def iter_requests(self, cached: bool = True) -> Iterator[NodeRequest]:
        """Yield every readable request (a cache snapshot when cached)."""
        if cached and self.cache is not None:
            yield from self.cache.values()
            return
        for request_id in self.get_request_ids():
            request = self._read_request(request_id)[0]
            if request is not None:
                yield request

    # Writing ------------------------------------------------------------

    def store_request(self, request: NodeRequest) -> None:
        """Overwrite an existing request; updates ``request.stat``.

        Call with the request locked.

        :raises ValueError: the request was never submitted.
        :raises kazoo.exceptions.NoNodeError: the request was deleted.
        """
        if request.id is None:
            raise ValueError("use submit_request() for a new request")
        data = request.serialize()
        with self._own_change(request.id):
            try:
                request.stat = self.kazoo.set(request_path(request.id), data)
            except Exception:
                # The object is ahead of the record now: its version no
                # longer vouches for its contents (see lock_request()).
                request.stat = None
                raise
            self._written(request, data)

    def _own_change(self, request_id: str):
        """Context of a write of ours to the request, which we then put
        into the cache ourselves (so the cache need not read it)."""
        return own_change(self.cache, request_path(request_id))

    def _written(self, request: NodeRequest, data: bytes) -> None:
        if self.cache is not None:
            self.cache.written_record((request.id,), data, request.stat)

    def delete_request(self, request: NodeRequest) -> None:
        """Delete the request znode; a missing one is not an error.

        The lock directory is left in place (the holder may still be
        using it); orphaned lock directories are cleaned up separately.
        """
        try:
            self.kazoo.delete(request_path(request.id), recursive=True)
        except NoNodeError:
            pass

    # State transitions (caller holds the request lock) ------------------

    def accept_request(self, request: NodeRequest) -> None:
        """Mark ``request`` pending (this launcher works on it) and store.

        :raises ValueError: the request is not ``requested``.
        """
        self._require_state(request, RequestState.REQUESTED)
        request.state = RequestState.PENDING
        self.store_request(request)

    def decline_request(self, request: NodeRequest, launcher_id: str,
                        registered_pool_ids: Iterable[str]) -> RequestState:
        """Record that pool ``launcher_id`` cannot satisfy ``request``.

        The id is added to ``declined_by`` (once).  If every registered
        pool has now declined, the request fails; otherwise it goes back
        to ``requested`` for the others.  With no registered pools it
        fails too.  The request is stored; the caller still unlocks it.
        Returns the new state.
        """
        if launcher_id not in request.declined_by:
            request.declined_by.append(launcher_id)
        if set(registered_pool_ids) <= set(request.declined_by):
            request.state = RequestState.FAILED
        else:
            request.state = RequestState.REQUESTED
        self.store_request(request)
        return request.state

    def fulfill_request(self, request: NodeRequest,
                        node_ids: Iterable[str]) -> None:
        """Record the nodes for ``request`` and mark it fulfilled.

        ``node_ids`` must be in the order of ``request.node_types``.
        The nodes should already be allocated to the request and stored.

        :raises ValueError: the number of nodes does not match.
        """
        self._mark_fulfilled(request, list(node_ids))
        self.store_request(request)

    def requeue_request(self, request: NodeRequest) -> None:
        """Return a pending request nobody works on to ``requested``.

        Used by the lost-request cleanup: the assigned nodes are forgotten
        (the caller de-allocates them).  Stored immediately.
        """
        request.nodes = []
        request.state = RequestState.REQUESTED
        self.store_request(request)

    def fail_invalid_request(self, request_id: str,
                             launcher_id: Optional[str] = None) -> bool:
        """Fail a request whose payload cannot be read (bad JSON, wrong
        types, no ``node_types``, empty).

        Left alone, such a request stays where it is forever: no launcher
        can tell what it asks for, so none serves or declines it, and its
        requestor waits.  Under the request lock (taken without blocking)
        the payload is re-read; if it is still invalid it is replaced by a
        valid ``failed`` request keeping every field that was readable on
        its own (see :meth:`NodeRequest.salvage`) except ``nodes``, with
        ``launcher_id`` in ``declined_by``.  The write is version-checked, so a concurrent
        fix by the requestor wins.  The record format has no field for the
        reason; it is logged.

        Returns whether the request was failed; False if it is gone,
        readable after all, or changed meanwhile.

        :raises LockError: somebody holds the request lock.
        :raises kazoo.exceptions.KazooException: ZooKeeper failed.
        """
        path = request_path(request_id)
        lock = locks.acquire_lock(self.kazoo, request_lock_path(request_id),
                                  blocking=False)
        gone = False
        try:
            try:
                data, stat = self.kazoo.get(path)
            except NoNodeError:
                gone = True
                return False
            try:
                NodeRequest.from_bytes(data, stat=stat, id=request_id)
                return False
            except InvalidRecordError as e:
                reason = e
            request = NodeRequest.salvage(data, request_id)
            request.state = RequestState.FAILED
            # A failed request hands out no nodes; any allocated to it are
            # freed once its requestor deletes it.
            request.nodes = []
            if launcher_id and launcher_id not in request.declined_by:
                request.declined_by.append(launcher_id)
            try:
                self.kazoo.set(path, request.serialize(),
                               version=stat.version)
            except (NoNodeError, BadVersionError):
                return False
            log.warning("Failed malformed request %s: %s", path, reason)
            return True
        finally:
            locks.release_lock(lock)
            if gone:
                # Our attempt recreated the lock directory.
                self.delete_request_lock(request_id)

    @staticmethod
    def _require_state(request: NodeRequest, state: RequestState) -> None:
        if request.state != state:
            raise ValueError("request %s is %s, not %s"
                             % (request.id, request.state, state.value))
