# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""A host-key scanner for launchers whose nodes live in no network.

The test driver's instances have addresses such as ``fake-i-1`` that no
resolver knows.  :class:`FakeScanner` answers those at once with
:data:`FAKE_HOST_KEY` and hands every other address (a real sshd a test
pointed the fake cloud at, a static host) to a real
:class:`~nodepool.nodescan.NodeScanner`.  Tests pass it to the launcher
(``NodePoolLauncher(..., scanner=FakeScanner())``).
"""

import threading

from nodepool.nodescan import NodeScanner, wants_keys

#: The key a scan of a fake address returns.
FAKE_HOST_KEY = "ssh-rsa FAKEKEY"


def is_fake_address(address: str) -> bool:
    """Whether ``address`` is one of the test driver's made-up ones."""
    return address.startswith("fake")


class FinishedScan:
    """A scan request that completed when it was submitted."""

    complete = True
    cancelled = False
    exception = None

    def __init__(self, host, port, keys):
        self.host = host
        self.port = port
        self.result = list(keys)

    def cancel(self) -> None:
        pass

    def wait(self, timeout=None) -> bool:
        return True


class FakeScanner:
    """:class:`~nodepool.nodescan.NodeScanner`'s interface; fake addresses
    (see :func:`is_fake_address`) are answered without the network.

    ``submitted`` lists ``(address, port)`` of every scan asked for.
    """

    def __init__(self, real: NodeScanner = None):
        self.real = real or NodeScanner(name="FakeScanner")
        self.submitted: list = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self.real.start()

    def stop(self) -> None:
        self.real.stop()

    def submit(self, ip, port=22, timeout=60, gather_keys=True,
               connection_type="ssh"):
        with self._lock:
            self.submitted.append((ip, port))
        if not is_fake_address(ip):
            return self.real.submit(ip, port, timeout,
                                    gather_keys=gather_keys,
                                    connection_type=connection_type)
        keys = ([FAKE_HOST_KEY] if wants_keys(gather_keys, connection_type)
                else [])
        return FinishedScan(ip, port, keys)
