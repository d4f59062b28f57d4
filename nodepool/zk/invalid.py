# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Reporting records that cannot be read, once per version.

A corrupt znode is read again on every pass of whoever lists its tree (the
builder every few seconds, a cache after every reconnection).  Logging it
each time would bury everything else; logging it never would hide it.  So
each reader (a store, a cache, the component registry) owns an
:class:`InvalidRecordLog`: the first time it meets a version of a bad
record it logs a warning naming the path, later reads of the same version
only log at debug level, and a new write to the znode (a new ``mzxid``)
is reported again.  Messages are cut short: a huge garbage payload must
not become a huge log line.
"""

import collections
import logging
import threading
from typing import Optional

# Longest reason logged, in characters.
MAX_REASON = 300


class InvalidRecordLog:
    """Remembers which version of which bad record was reported.

    Thread-safe.  At most ``capacity`` paths are remembered (oldest
    forgotten first), so a flood of garbage cannot grow it without bound;
    a forgotten record is merely reported again.
    """

    def __init__(self, capacity: int = 4096):
        self.capacity = capacity
        self._seen: "collections.OrderedDict[str, int]" = \
            collections.OrderedDict()
        self._lock = threading.Lock()

    def report(self, logger: logging.Logger, path: str, stat,
               error: Exception, what: str = "record") -> bool:
        """Log ``error`` for the record at ``path`` unless this version
        (``stat.mzxid``; None if unknown) was reported already.

        Returns whether a warning was logged.
        """
        mzxid: Optional[int] = getattr(stat, "mzxid", None)
        with self._lock:
            first = path not in self._seen or self._seen[path] != mzxid
            self._seen[path] = mzxid
            self._seen.move_to_end(path)
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
        reason = str(error)
        if len(reason) > MAX_REASON:
            reason = reason[:MAX_REASON] + "... (%d characters)" % len(reason)
        if first:
            logger.warning("Ignoring invalid %s %s: %s", what, path, reason)
        else:
            logger.debug("Still invalid: %s %s: %s", what, path, reason)
        return first

    def forget(self, path: str) -> None:
        """The record at ``path`` was deleted or became valid."""
        with self._lock:
            self._seen.pop(path, None)
