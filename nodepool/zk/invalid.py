# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Reporting records that cannot be read, once per version.

A corrupt znode is read again on every pass of whoever lists its tree (the
builder every few seconds, a cache after every reconnection).  Logging it
each time would bury everything else; logging it never would hide it.  So
the first reader of each version of a bad record logs a warning naming its
path, and later reads of the same version only log at debug level.  A new
write to the znode (a new ``mzxid``) is reported again.
"""

import collections
import logging
import threading
from typing import Optional


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
        if first:
            logger.warning("Ignoring invalid %s %s: %s", what, path, error)
        else:
            logger.debug("Still invalid: %s %s: %s", what, path, error)
        return first

    def forget(self, path: str) -> None:
        """The record at ``path`` was deleted or became valid."""
        with self._lock:
            self._seen.pop(path, None)


# Shared by the stores' direct reads in one process.
REPORTED = InvalidRecordLog()
