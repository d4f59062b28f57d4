# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Keeping a static provider's node records in step with its hosts.

Every configured host owns ``max-parallel-jobs`` slots, and each slot is
backed by one node record.  The :class:`Registrar` thread of a provider
checks hosts (a key scan, a TCP connect or nothing, depending on the
host's settings) and then, per host, reconciles the records found in
ZooKeeper with the config: it fills empty slots with new ``ready`` nodes,
rewrites free ready nodes whose attributes changed and deregisters free
ready nodes that have no slot any more.  Nodes that are allocated, in use,
held or used are never touched: they are dealt with once they come back
(the deleter reports each removed record through ``node_deleted``).

Hosts are checked when the provider starts, after one of their nodes was
used, at every periodic sync and, while they fail, at the retry interval.
A failing host has its free ready nodes withdrawn until it passes again.

All ZooKeeper writes happen in the registrar thread, never in the pool
worker or the runners, and host scans go through the launcher's
non-blocking :class:`~nodepool.nodescan.NodeScanner`.
"""

import logging
import socket
import threading
import time
from collections.abc import Mapping
from typing import Optional

from kazoo.exceptions import KazooException

from nodepool import exceptions
from nodepool.nodescan import KEY_CONNECTION_TYPES, wants_keys
from nodepool.service import ServiceThread
from nodepool.zk.models import Node, NodeState

#: The ``launcher`` value of every static node record.
STATIC_LAUNCHER = "static driver"

# States whose record is on its way out: its slot counts as free (the
# deleter reports the removal, which refills the slot).
_LEAVING = frozenset((NodeState.DELETING, NodeState.DELETED))


def node_identity(node: Node) -> tuple:
    """The host identity (name, username, port) a node record belongs to."""
    name = node.hostname or node.external_id
    return (name, node.username, node.connection_port)


def normalized_key(key: str) -> str:
    """``"<type> <base64>"`` of a host key line (comments dropped)."""
    return " ".join(key.split()[:2])


def thaw(value):
    """Plain JSON-ready data from frozen config values."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [thaw(v) for v in value]
    return value


def resolve_addresses(name: str) -> tuple:
    """``(public_ipv4, public_ipv6)`` of a host name (None when unknown)."""
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None, None
    v4 = next((i[4][0] for i in infos if i[0] == socket.AF_INET), None)
    v6 = next((i[4][0] for i in infos if i[0] == socket.AF_INET6), None)
    return v4, v6


class _KeysGiven:
    """A finished check whose keys come from the config (no network)."""

    complete = True
    exception = None

    def __init__(self, keys):
        self.result = list(keys)

    def cancel(self):
        pass


class SharedBook:
    """What the providers of one name share within one launcher.

    A provider whose config changed is replaced by a new instance while
    the old one finishes its work, so two instances may briefly coexist.
    Only :attr:`current` writes; ``lock`` serialises its reconciliations.
    The launcher's services keep the book (see
    :meth:`~nodepool.driver.base.ProviderServices.shared_state`).
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.current = None  # the Registrar allowed to write


def shared_book(services, provider_name: str) -> SharedBook:
    """The :class:`SharedBook` of a provider name in one launcher."""
    return services.shared_state(("static-book", provider_name), SharedBook)


class _Host:
    """The registrar's view of one configured host."""

    def __init__(self, config, pool):
        self.config = config
        self.pool = pool
        self.check = None       # ScanRequest (or _KeysGiven) in flight
        self.pending = False    # a check is wanted
        self.failed = False
        self.retry_at: Optional[float] = None

    @property
    def identity(self) -> tuple:
        return self.config.identity


class Registrar(ServiceThread):
    """The thread registering the nodes of one static provider.

    :param provider: the :class:`StaticProvider`; its ``config``,
        ``services`` (``nodes``, ``node_cache``, ``scanner``) and
        ``wake_pool_workers()`` are used.
    :param poll: how often finished scans are collected while any runs.
    :param retry_interval: delay before a failed host is checked again.
    :param sync_interval: period of the full reconciliation (every host
        checked, unknown records deregistered).
    """

    def __init__(self, provider, poll: float, retry_interval: float,
                 sync_interval: float):
        super().__init__(
            "StaticRegistrar.%s" % provider.name, poll, logging.getLogger(
                "nodepool.driver.static.Registrar.%s" % provider.name))
        self.provider = provider
        self.provider_name = provider.name
        self.nodes = provider.services.nodes
        self.cache = provider.services.node_cache
        self.scanner = provider.services.scanner
        self.book = shared_book(provider.services, provider.name)
        self.poll = poll
        self.retry_interval = retry_interval
        self.sync_interval = sync_interval
        self.hosts: dict = {}
        for pool in provider.config.pools.values():
            for host in pool.nodes:
                if host.identity in self.hosts:
                    self.log.warning(
                        "Host %s is listed more than once; only its first "
                        "entry (pool %s) is used", host.identity,
                        self.hosts[host.identity].pool.name)
                    continue
                self.hosts[host.identity] = _Host(host, pool)
        self._lock = threading.Lock()
        self._triggered: set = set()
        self._sync_due = True
        self._next_sync: Optional[float] = None
        #: Set once every host got its first check and reconciliation.
        self.synced = threading.Event()

    # Life cycle and triggers (any thread) --------------------------------

    def start(self) -> None:
        # The newest provider of a name takes over; an older one still
        # finishing its work stops writing from now on.
        self.book.current = self
        super().start()

    def on_stop(self) -> None:
        if self.book.current is self:
            self.book.current = None

    def join(self, timeout=None) -> bool:
        ended = super().join(timeout)
        for host in self.hosts.values():
            if host.check is not None:
                host.check.cancel()
        return ended

    def host_freed(self, identity: tuple) -> None:
        """A node of ``identity`` was removed: check and refill the host.

        Never blocks (called from the delete runner).
        """
        with self._lock:
            self._triggered.add(identity)
        self.wake()

    # The thread ---------------------------------------------------------

    def run_once(self) -> float:
        now = time.monotonic()
        if self._next_sync is None:
            self._next_sync = now + self.sync_interval
        elif now >= self._next_sync:
            self._next_sync = now + self.sync_interval
            with self._lock:
                self._sync_due = True
        try:
            delay = self._pass(now)
        except Exception:
            self.log.exception("Registration pass failed")
            delay = self.retry_interval
            with self._lock:
                self._sync_due = True
        return max(0.0, min(delay, self._next_sync - time.monotonic()))

    def _pass(self, now: float) -> float:
        """One round; returns how long the thread may sleep."""
        if self.book.current is not self:
            return self.sync_interval
        with self._lock:
            triggered, self._triggered = self._triggered, set()
            sync, self._sync_due = self._sync_due, False
        if sync:
            self._deregister_unknown()
            triggered = set(self.hosts)
        for identity in triggered:
            host = self.hosts.get(identity)
            if host is not None:
                host.pending = True
        for host in self.hosts.values():
            if host.retry_at is not None and host.retry_at <= now:
                host.retry_at = None
                host.pending = True
            if host.check is not None and host.check.complete:
                check, host.check = host.check, None
                self._checked(host, check)
            if host.pending and host.check is None:
                host.pending = False
                host.check = self._start_check(host)
        checks = [h.check for h in self.hosts.values() if h.check is not None]
        if any(check.complete for check in checks):
            return 0
        if checks:
            return self.poll
        self.synced.set()
        retries = [h.retry_at for h in self.hosts.values()
                   if h.retry_at is not None]
        if retries:
            return max(0.0, min(retries) - time.monotonic())
        return self.sync_interval

    # Checking hosts -----------------------------------------------------

    def _start_check(self, host: _Host):
        config = host.config
        if (config.connection_type in KEY_CONNECTION_TYPES
                and not config.host_key_checking):
            # Trusted as configured: no network access at all.
            return _KeysGiven(config.host_key)
        # With checking, ssh-like hosts get their keys scanned; other
        # connection types (and unchecked ones of such types) only need
        # to accept a TCP connection.
        return self.scanner.submit(
            config.name, config.connection_port, config.timeout,
            gather_keys=config.host_key_checking,
            connection_type=config.connection_type)

    def _checked(self, host: _Host, check) -> None:
        config = host.config
        problem = check.exception
        keys = list(check.result or [])
        if problem is None and config.host_key and wants_keys(
                config.host_key_checking, config.connection_type):
            scanned = {normalized_key(k) for k in keys}
            missing = [k for k in config.host_key
                       if normalized_key(k) not in scanned]
            if missing:
                problem = "configured host key(s) %s not offered (got %s)" % (
                    missing, keys)
        if problem is not None:
            if not host.failed:
                self.log.warning("Host %s failed its check: %s",
                                 host.identity, problem)
            host.failed = True
            host.retry_at = time.monotonic() + self.retry_interval
            self._withdraw(host)
            return
        if host.failed:
            self.log.info("Host %s passes its check again", host.identity)
        host.failed = False
        host.retry_at = None
        self._reconcile(host, keys)

    # Reconciling records --------------------------------------------------

    def _records(self) -> list:
        """Live node records of this provider.

        The node store writes through to the cache, so our own
        registrations and removals are in it already.
        """
        return [node for node in self.cache.values()
                if node.provider == self.provider_name
                and node.state not in _LEAVING]

    @staticmethod
    def _free(node: Node) -> bool:
        return node.state == NodeState.READY and not node.allocated_to

    @classmethod
    def _assign_slots(cls, nodes: list, count: int) -> tuple:
        """Map slots to records: busy records first, so that a host never
        has more nodes out than it has slots; returns (by_slot, extras)."""
        by_slot: dict = {}
        extras = []
        ordered = sorted(nodes, key=lambda n: (cls._free(n), n.id))
        for node in ordered:
            slot = node.slot
            if not (isinstance(slot, int) and 0 <= slot < count
                    and slot not in by_slot):
                slot = next((s for s in range(count) if s not in by_slot),
                            None)
            if slot is None:
                extras.append(node)
            else:
                by_slot[slot] = node
        return by_slot, extras

    def _reconcile(self, host: _Host, keys: list) -> None:
        config = host.config
        addresses = resolve_addresses(config.name)
        registered = 0
        with self.book.lock:
            if self.book.current is not self:
                return
            mine = [n for n in self._records()
                    if node_identity(n) == host.identity]
            by_slot, extras = self._assign_slots(
                mine, max(0, config.max_parallel_jobs))
            for node in extras:
                self._deregister(node, "its host has no slot left for it")
            for slot in range(max(0, config.max_parallel_jobs)):
                wanted = self._attributes(host, keys, slot, addresses)
                node = by_slot.get(slot)
                if node is None:
                    self._register(wanted)
                    registered += 1
                elif self._differs(node, wanted):
                    self._update(node, wanted)
        if registered:
            self.provider.wake_pool_workers()

    def _withdraw(self, host: _Host) -> None:
        with self.book.lock:
            if self.book.current is not self:
                return
            for node in self._records():
                if node_identity(node) == host.identity:
                    self._deregister(node, "its host failed its check")

    def _deregister_unknown(self) -> None:
        with self.book.lock:
            if self.book.current is not self:
                return
            for node in self._records():
                if node_identity(node) not in self.hosts:
                    self._deregister(node, "its host is not configured")

    def _attributes(self, host: _Host, keys: list, slot: int,
                    addresses: tuple) -> dict:
        config = host.config
        return dict(
            pool=host.pool.name,
            type=list(config.labels),
            hostname=config.name,
            external_id=config.name,
            interface_ip=config.name,
            public_ipv4=addresses[0],
            public_ipv6=addresses[1],
            username=config.username,
            connection_port=config.connection_port,
            connection_type=config.connection_type,
            python_path=config.python_path,
            shell_type=config.shell_type,
            host_keys=list(keys),
            attributes=thaw(host.pool.node_attributes) or None,
            slot=slot,
        )

    @staticmethod
    def _differs(node: Node, wanted: dict) -> bool:
        for name, value in wanted.items():
            current = getattr(node, name)
            if name == "host_keys":
                if sorted(current or []) != sorted(value):
                    return True
            elif current != value:
                return True
        return False

    def _register(self, wanted: dict) -> None:
        node = Node()
        node.state = NodeState.READY
        node.provider = self.provider_name
        node.launcher = STATIC_LAUNCHER
        for name, value in wanted.items():
            setattr(node, name, value)
        self.nodes.store_node(node)
        self.log.info("Registered node %s for %s slot %s", node.id,
                      node_identity(node), node.slot)

    def _locked_free(self, node: Node) -> bool:
        """Lock ``node`` without waiting; True if it is still free (then
        the caller owns the lock)."""
        if node.is_locked or node.lock_contenders:
            return False
        try:
            self.nodes.lock_node(node, blocking=False)
        except exceptions.LockError:
            return False
        if self._free(node):
            return True
        self.nodes.unlock_node(node)
        return False

    def _update(self, node: Node, wanted: dict) -> None:
        if not self._free(node) or not self._locked_free(node):
            return  # busy: it gets the new settings when it comes back
        try:
            for name, value in wanted.items():
                setattr(node, name, value)
            self.nodes.store_node(node)
            self.log.info("Updated node %s of %s", node.id,
                          node_identity(node))
        except KazooException:
            self.log.exception("Updating node %s failed", node.id)
        finally:
            self.nodes.unlock_node(node)

    def _deregister(self, node: Node, why: str) -> None:
        if not self._free(node) or not self._locked_free(node):
            return  # waits until released; its slot is not refilled
        try:
            self.nodes.delete_node(node)
            self.log.info("Deregistered node %s of %s: %s", node.id,
                          node_identity(node), why)
        except KazooException:
            self.log.exception("Deregistering node %s failed", node.id)
        finally:
            try:
                self.nodes.unlock_node(node)
            except exceptions.LockError:
                pass


def free_nodes_of(nodes, provider_name: str) -> list:
    """The READY, unallocated, unlocked nodes of a provider."""
    return [node for node in nodes
            if node.provider == provider_name
            and node.state == NodeState.READY and not node.allocated_to
            and not node.is_locked and not node.lock_contenders]
