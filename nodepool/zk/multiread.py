# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Many reads in one request: ZooKeeper's ``multiRead``.

A tree cache reads thousands of znodes at once when it synchronises and
whenever another client writes a burst of records.  Sent one by one, each
read costs kazoo's connection thread a loop turn, a few system calls and a
wake-up on the way out and again on the way back, all under the GIL that
the cache's own threads want too; that, not the server, bounds how fast a
cache fills.  ZooKeeper 3.6 added ``multiRead`` (opcode 22): a list of
``getData``/``getChildren`` operations answered in one reply, each with its
own result or error (unlike ``multi``, nothing is atomic and one failing
read does not fail the others).  Kazoo 2.11 does not know it, so
:class:`MultiRead` is the request and :class:`BatchReader` collects reads
into such requests.

Servers before 3.6 do not know the operation; the caches need 3.6 anyway
for their persistent watches (:mod:`nodepool.zk.watches`).
"""

import threading
from collections import namedtuple
from typing import Callable, Iterable, List, Optional

from kazoo.client import KazooClient
from kazoo.exceptions import EXCEPTIONS, NoNodeError, ZookeeperError
from kazoo.protocol.serialization import (
    GetChildren,
    GetData,
    int_struct,
    multiheader_struct,
    read_buffer,
    read_string,
    stat_struct,
    write_string,
)
from kazoo.protocol.states import ZnodeStat

GET_DATA = 4
GET_CHILDREN = 8
# The type of a sub-result that carries an error code instead of a result.
ERROR = -1

#: Reads per request.  A reply holds every record of its batch, so this
#: bounds the reply size too (about 100 KB for 128 node records).
BATCH_LIMIT = 128


class MultiRead(namedtuple("MultiRead", "ops")):
    """The ``multiRead`` request: ``ops`` is a tuple of ``(type, path)``,
    ``type`` one of :data:`GET_DATA` and :data:`GET_CHILDREN`, ``path`` as
    the server sees it (chroot included).

    The reply is a list with one entry per operation, in order: ``(data,
    stat)`` for a read of data, a list of names for a listing, or the
    :class:`kazoo.exceptions.ZookeeperError` the read failed with.  Shaped
    like kazoo's own requests so that ``KazooClient._call`` can queue it;
    it sets no watches.
    """

    type = 22

    def serialize(self) -> bytes:
        parts = []
        for op_type, path in self.ops:
            parts.append(multiheader_struct.pack(op_type, 0, -1))
            parts.append(write_string(path))
            parts.append(b"\0")  # no watch
        parts.append(multiheader_struct.pack(-1, 1, -1))
        return b"".join(parts)

    def deserialize(self, buffer, offset) -> list:
        results = []
        while True:
            op_type, done, err = multiheader_struct.unpack_from(buffer, offset)
            offset += multiheader_struct.size
            if done:
                return results
            if op_type == GET_DATA:
                data, offset = read_buffer(buffer, offset)
                stat = ZnodeStat._make(stat_struct.unpack_from(buffer,
                                                               offset))
                offset += stat_struct.size
                results.append((data, stat))
            elif op_type == GET_CHILDREN:
                count = int_struct.unpack_from(buffer, offset)[0]
                offset += int_struct.size
                children = []
                for _ in range(max(count, 0)):
                    child, offset = read_string(buffer, offset)
                    children.append(child)
                results.append(children)
            elif op_type == ERROR:
                code = int_struct.unpack_from(buffer, offset)[0]
                offset += int_struct.size
                results.append(_error(code))
            else:
                raise ValueError("unexpected multiRead result type %d"
                                 % op_type)


def _error(code: int) -> Exception:
    try:
        return EXCEPTIONS[code]()
    except RuntimeError:  # kazoo's answer to a code it does not know
        return ZookeeperError("ZooKeeper error code %d" % code)


class ReadResult:
    """One read of a batch; ``get()`` like kazoo's async results.

    Only valid once its batch was sent (:meth:`BatchReader.flush`): before
    that, ``get()`` would wait for a reply that never comes.
    """

    __slots__ = ("_batch", "_index")

    def __init__(self, batch, index: int):
        self._batch = batch
        self._index = index

    def get(self, block: bool = True, timeout: Optional[float] = None):
        """The read's result; raises the error the read failed with
        (e.g. :class:`~kazoo.exceptions.NoNodeError`), or the batch's
        (e.g. ConnectionLoss)."""
        return self._batch.get(self._index, block, timeout)


class BatchReader:
    """Collects reads and sends them ``limit`` at a time as one request.

    :meth:`get` and :meth:`get_children` return a :class:`ReadResult` at
    once; the reads go out when ``limit`` are waiting or when the owner
    calls :meth:`flush`, which it must do before anybody waits for a
    result.  A lone read goes out as a plain one.  Requests leave in the
    order of the calls, and ZooKeeper answers a session's requests in
    order, so reads keep their order too.

    Thread-safe, but meant for one producer (a cache's event thread);
    ``requests`` counts the requests sent, for tests and benchmarks.
    """

    def __init__(self, kazoo: KazooClient, limit: int = BATCH_LIMIT):
        self.kazoo = kazoo
        self.limit = limit
        self.requests = 0
        self._lock = threading.Lock()
        self._ops: List[tuple] = []
        self._batch = None

    @property
    def pending(self) -> int:
        """How many reads wait to be sent."""
        return len(self._ops)

    def get(self, path: str) -> ReadResult:
        """Read ``path``'s data and stat."""
        return self._add(GET_DATA, path)

    def get_children(self, path: str) -> ReadResult:
        """List ``path``'s children."""
        return self._add(GET_CHILDREN, path)

    def walk(self, root: str,
             listing_paths: Callable[[str], Iterable[str]]) -> tuple:
        """List the tree below ``root``, one level (a few requests) at a
        time; return ``(paths, listings)``: every path found, parents
        before children, and how many listings that took.

        ``listing_paths(path)`` says where to look for what lies below a
        path found (see :meth:`TreeCache.listing_paths`).  Paths that
        vanish meanwhile are skipped; other errors are raised.
        """
        found: List[str] = []
        listings = 0
        level = [root]
        while level:
            pending = [(path, self.get_children(path)) for path in level]
            self.flush()
            listings += len(pending)
            level = []
            for parent, result in pending:
                try:
                    children = result.get()
                except NoNodeError:
                    continue
                prefix = parent.rstrip("/") + "/"
                for child in children:
                    path = prefix + child
                    found.append(path)
                    level.extend(listing_paths(path))
        return found, listings

    def _add(self, op_type: int, path: str) -> ReadResult:
        with self._lock:
            if not self._ops:
                self._batch = _Batch(self.kazoo.handler)
            result = ReadResult(self._batch, len(self._ops))
            self._ops.append((op_type, path))
            if len(self._ops) >= self.limit:
                self._send()
        return result

    def flush(self) -> None:
        """Send the reads collected so far."""
        with self._lock:
            if self._ops:
                self._send()

    def _send(self) -> None:
        ops, batch = self._ops, self._batch
        self._ops, self._batch = [], None
        self.requests += 1
        chroot = self.kazoo.chroot or ""
        ops = [(op_type, (chroot + path).rstrip("/") or "/")
               for op_type, path in ops]
        if len(ops) == 1:
            # A lone read goes out as the plain request, which is
            # smaller and cheaper to parse.
            batch.single = True
            op_type, path = ops[0]
            request = (GetData(path, None) if op_type == GET_DATA
                       else GetChildren(path, None))
        else:
            request = MultiRead(tuple(ops))
        self.kazoo._call(request, batch.result)


class _Batch:
    """The reply to one request: a plain read's result when the batch
    held one read (``single``), else a list of per-read results."""

    __slots__ = ("result", "single")

    def __init__(self, handler):
        self.result = handler.async_result()
        # Set before the request is queued, so before any reply.
        self.single = False

    def get(self, index: int, block: bool, timeout: Optional[float]):
        reply = self.result.get(block, timeout)
        if self.single:
            return reply
        result = reply[index]
        if isinstance(result, Exception):
            raise result.with_traceback(None)
        return result
