# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Fault injection for the loopback HTTP fakes (OpenStack, Azure).

A fake keeps a :class:`Faults` and asks it around each request, by the
name of the request's route:

* :meth:`Faults.before` gives an answer to send *instead* of handling the
  request (:meth:`Faults.fail`: a 429 with ``Retry-After``, a 5xx);
* :meth:`Faults.after` says how to lose the answer of a request the fake
  *has* handled (:meth:`Faults.lose_answer`): the cloud did the work, the
  client never hears of it.  :func:`lose` carries that out on a
  ``BaseHTTPRequestHandler``.
"""

import collections
import socket
import threading
from typing import Optional

LOSSES = ("drop", "error", "hold")


class Faults:
    """Faults queued per route name, each for the next N requests.
    Thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._answers = collections.defaultdict(list)
        self._losses = collections.defaultdict(list)
        # Set by release(): held answers are let go (the fake's stop).
        self.released = threading.Event()

    def fail(self, route: str, status: int, body: dict, times: int = 1,
             retry_after: Optional[float] = None) -> None:
        """Answer the next ``times`` requests of ``route`` with ``status``
        and the JSON ``body`` (and ``Retry-After`` when given)."""
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        with self._lock:
            self._answers[route].extend([(status, body, headers)] * times)

    def lose_answer(self, route: str, how: str = "drop",
                    times: int = 1) -> None:
        """Handle the next ``times`` requests of ``route``, then lose the
        answer: ``drop`` closes the connection, ``error`` answers 500,
        ``hold`` keeps the client waiting until it times out (until
        :meth:`release` at the latest)."""
        if how not in LOSSES:
            raise ValueError("unknown way to lose an answer: %s" % how)
        with self._lock:
            self._losses[route].extend([how] * times)

    def before(self, route: str) -> Optional[tuple]:
        """``(status, body, headers)`` to answer instead, or None."""
        with self._lock:
            queued = self._answers.get(route)
            return queued.pop(0) if queued else None

    def after(self, route: str) -> Optional[str]:
        """How to lose the answer of a handled request, or None."""
        with self._lock:
            queued = self._losses.get(route)
            return queued.pop(0) if queued else None

    def pending(self) -> int:
        """Faults not yet used."""
        with self._lock:
            return sum(len(q) for q in self._answers.values()) + sum(
                len(q) for q in self._losses.values())

    def release(self) -> None:
        self.released.set()


def lose(handler, how: str, faults: Faults) -> bool:
    """Lose the answer on ``handler`` (a ``BaseHTTPRequestHandler``);
    True when nothing is to be sent, False when the caller sends a 500
    (``error``)."""
    if how == "error":
        return False
    handler.close_connection = True
    if how == "drop":
        try:
            handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return True
    # hold: the client times out meanwhile.
    faults.released.wait()
    return True
