# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Private ZooKeeper setups that tools/chaos.py breaks on purpose.

* :class:`SingleZk`: one TLS server the tool may stop, restart or pause;
* :class:`EnsembleZk`: three TLS members whose leader or followers it
  kills;
* :class:`ZkLink`: a TCP forwarder in front of one server that can be
  cut, to isolate one client (the launcher) while the others stay
  connected.
"""

import os
import signal
import socket
import threading

from tests.fixtures import zkserver


class ZkLink:
    """A TCP forwarder to one ZooKeeper port that can be cut.

    The launcher connects through it (TLS passes through untouched), so
    cutting it isolates the launcher alone: its session expires on the
    server while the tool's own clients stay connected.  While cut, new
    connections are accepted and closed at once.
    """

    def __init__(self, host, port):
        self.target = (host, port)
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets = set()
        self._thread = threading.Thread(target=self._accept, daemon=True,
                                        name="zk-link")
        self._thread.start()

    def _accept(self):
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst),
                                 daemon=True, name="zk-link-pump").start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._close(src, dst)

    def _close(self, *socks):
        for sock in socks:
            with self._lock:
                self._sockets.discard(sock)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def cut(self):
        self._cut.set()
        with self._lock:
            socks = list(self._sockets)
        self._close(*socks)

    def restore(self):
        self._cut.clear()

    def stop(self):
        self._closed.set()
        self.cut()
        self._thread.join(5)
        self._listener.close()


class SingleZk:
    """A private TLS ZooKeeper the scenario may stop, restart or pause."""

    def __init__(self, directory, certs):
        self.certs = certs
        self.server = zkserver.ZooKeeperServer(
            os.path.join(directory, "zk"), certs=certs)

    def start(self):
        self.server.start()
        return self

    @property
    def plain_hosts(self):
        return self.server.hosts

    @property
    def tls_servers(self):
        return [(self.server.host, self.server.secure_port)]

    def stop(self):
        proc = self.server.proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # in case it was paused
        self.server.stop(kill=True)


class EnsembleZk:
    """A private three-member TLS ensemble."""

    def __init__(self, directory, certs):
        self.certs = certs
        self.ensemble = zkserver.Ensemble(os.path.join(directory, "ensemble"),
                                          certs=certs)

    def start(self):
        self.ensemble.start()
        return self

    @property
    def plain_hosts(self):
        return self.ensemble.hosts

    @property
    def tls_servers(self):
        return [(m.host, m.secure_port) for m in self.ensemble.members]

    def stop(self):
        for member in self.ensemble.members:
            member.stop(kill=True)
