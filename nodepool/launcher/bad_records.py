# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Failing node requests whose records cannot be read.

The request cache keeps the keys of unreadable request znodes aside
(:meth:`nodepool.zk.cache.TreeCache.invalid`).  Nobody can serve or
decline such a request, so unless a launcher fails it, its requestor waits
forever (nodepool 11 does exactly that with a payload that is no JSON).
Each pool worker runs a :class:`MalformedRequestFailer` at the start of its
passes; whichever gets the request lock first fails the request, and the
rewritten record is valid, so it leaves the invalid set and is never
looked at again.
"""

import logging
from typing import Dict, Optional

from kazoo.exceptions import KazooException

from nodepool.exceptions import LockError


class MalformedRequestFailer:
    """Fails the malformed requests a request cache has set aside.

    Each version of a bad request is tried until it is failed or found
    not to need it; a request whose lock is held is tried again on a
    later pass (the holder may be its requestor about to fix it).  Not
    thread-safe: one owner calls :meth:`run`.

    :param services: gives ``requests`` (a
        :class:`~nodepool.zk.requests.RequestStore`) and ``request_cache``.
    :param launcher_id: written into ``declined_by`` of failed requests.
    """

    def __init__(self, services, launcher_id: Optional[str] = None):
        self.requests = services.requests
        self.cache = services.request_cache
        self.launcher_id = launcher_id
        self.log = logging.getLogger("nodepool.launcher.bad_records")
        # Request id -> mzxid of the version already dealt with.
        self._done: Dict[str, Optional[int]] = {}

    def run(self) -> int:
        """One pass; returns how many requests this pass failed.

        Never raises: the caller's other work must go on.
        """
        invalid = {key[0]: entry for key, entry in self.cache.invalid().items()}
        for request_id in set(self._done) - set(invalid):
            del self._done[request_id]
        failed = 0
        for request_id, entry in sorted(invalid.items()):
            if self._done.get(request_id, -1) == entry.mzxid:
                continue
            try:
                if self.requests.is_request_locked(request_id):
                    continue
                if self.requests.fail_invalid_request(request_id,
                                                      self.launcher_id):
                    failed += 1
            except LockError:
                continue
            except KazooException as e:
                self.log.debug("Could not fail request %s yet: %s",
                               request_id, e)
                continue
            except Exception:
                # Never let one bad record stop the pool worker's pass;
                # this version is not tried again.
                self.log.exception("Could not fail request %s", request_id)
            self._done[request_id] = entry.mzxid
        return failed
