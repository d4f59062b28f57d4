# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""One thread per provider pool: pick requests, hand them to handlers."""

import concurrent.futures
import logging
import socket
import uuid
from typing import Optional

from nodepool import exceptions
from nodepool.config import schema
from nodepool.driver.quota import tenant_limits_quota, tenant_usage
from nodepool.launcher import why
from nodepool.launcher.bad_records import MalformedRequestFailer
from nodepool.launcher.request_handler import PoolContext, RequestHandler
from nodepool.service import ServiceThread, shutdown_executor
from nodepool.zk.client import CONNECTION_ERRORS, is_connection_error
from nodepool.zk.components import PoolComponent
from nodepool.zk.models import RequestState

START_WORKERS = 8


class PoolWorker(ServiceThread):
    """Serves node requests for one pool of one provider.

    Every ``interval`` seconds (or sooner, when the request cache changes)
    it refreshes its ``pool`` component record, lets paused handlers retry,
    takes new requests it should serve and polls its handlers.

    :param view: the launcher's :class:`~nodepool.launcher.view.LauncherView`
        (current config, the workers serving each pool).
    :param services: the launcher's ZooKeeper stores, caches and registry.
    :param provider: the running provider whose pool this is.
    :param pool: the pool's config.
    :param journal: the launcher's
        :class:`~nodepool.launcher.why.RequestJournal`, where the worker
        and its handlers say why requests wait (default: one of its own).
    """

    def __init__(self, view, services, provider, pool,
                 interval: float = 1.0,
                 journal: Optional[why.RequestJournal] = None):
        name = "PoolWorker.%s-%s" % (provider.name, pool.name)
        super().__init__(name, interval, logging.getLogger(
            "nodepool.%s" % name))
        self.view = view
        self.services = services
        self.provider = provider
        self.pool = pool
        self.launcher_id = "%s-%s-%s" % (socket.getfqdn(), self.name,
                                         uuid.uuid4().hex)
        self._malformed = MalformedRequestFailer(self.services, self.launcher_id)
        self.journal = journal if journal is not None \
            else why.RequestJournal()
        self._context = PoolContext(services, provider, pool,
                                    self.launcher_id,
                                    self.registered_pool_ids, self.journal)
        self.publisher = why.WaitingPublisher()
        self.handlers: list[RequestHandler] = []
        self.component = PoolComponent(self.services.zk_client)
        self._draining = False
        self._limited = False  # at max-concurrency on the last check
        # Named after provider and pool: several pools of one provider
        # each have their own.
        self._start_pool = concurrent.futures.ThreadPoolExecutor(
            START_WORKERS, thread_name_prefix="start-%s-%s" % (
                provider.name, pool.name))

    # Life cycle ---------------------------------------------------------

    def start(self) -> None:
        # Finished launches complete requests: poll the handlers at once.
        self.provider.add_launch_listener(lambda launcher: self.wake())
        super().start()

    def stop(self, drain: bool = False) -> None:
        """Stop; with ``drain`` only after the current handlers finished.

        Never blocks."""
        self._draining = drain
        super().stop()

    def join(self, timeout=None) -> bool:
        """Wait for the thread (and its start threads), ``timeout``
        seconds each, then unregister the pool's component."""
        ended = super().join(timeout)
        ended = shutdown_executor(self._start_pool, timeout,
                                  self.log) and ended
        try:
            self.component.unregister()
        except Exception:
            self.log.exception("Could not unregister pool component")
        return ended

    @property
    def paused(self) -> bool:
        return any(h.paused for h in self.handlers)

    def run_once(self) -> None:
        try:
            self._pass()
        finally:
            self._report_stats()

    def on_error(self, error: Exception) -> None:
        self.log.exception("Error in pool worker pass")

    def finish(self) -> None:
        while self._draining and self.handlers:
            try:
                self._decline_paused()
                self._poll_handlers()
            except Exception:
                self.log.exception("Error finishing handlers")
            self.wait(self.interval)
        # Stopped without draining: whatever is left is abandoned (the
        # launcher is going away); stop counting it for max-concurrency.
        for handler in list(self.handlers):
            self._drop_handler(handler)

    def _pass(self) -> None:
        self._update_component()
        if self.services.zk_client.connected:
            self._malformed.run()
            self._assign_requests()
            self._poll_handlers()

    def _report_stats(self) -> None:
        """Provider and tenant limit gauges (throttled by the reporter)."""
        stats = self.services.stats
        if stats is None or not stats.enabled:
            return
        try:
            stats.update_pool_gauges(
                self.provider.config,
                self.view.config.tenant_resource_limits)
            stats.update_api_rates(self.provider.name,
                                   self.provider.api_rates())
            stats.update_capacity(self.provider.name,
                                  self.provider.capacity_entries())
        except Exception:
            self.log.exception("Could not report pool stats")

    def _update_component(self) -> None:
        attrs = dict(
            id=self.launcher_id, name=self.pool.name,
            provider_name=self.provider.name,
            supported_labels=sorted(self.pool.labels),
            priority=self.pool.priority, paused=self.paused,
            state="running")
        waiting = self._waiting()
        if waiting is not None:
            attrs["waiting"] = waiting
        # Filled in before the first write: readers (other launchers'
        # pool checks, Zuul, the web app) never see a half-empty record.
        current = self.component.to_dict()
        if any(current.get(k) != v for k, v in attrs.items()):
            self.component.update(**attrs)
        if not self.component.registered:
            self.component.register()

    def _waiting(self) -> Optional[dict]:
        """The pool's waiting requests for its component record, when
        they changed and were not written in the last few seconds (see
        :class:`~nodepool.launcher.why.WaitingPublisher`); else None."""
        if not self.publisher.due():
            return None
        active = {r.id for r in self.services.request_cache.values()
                  if r.state in (RequestState.REQUESTED,
                                 RequestState.PENDING)}
        return self.publisher.offer(
            self.journal.waiting(self._context.pool_key, active))

    def _decline_paused(self) -> None:
        """Draining after a reconfiguration: a paused handler would wait
        for room under the old config (possibly forever, e.g. when
        max-servers shrank below the request's size).  Decline its request
        instead (its nodes are freed) so the pools of the new config judge
        it afresh, as upstream re-checks a paused request against the
        current config.  The pool's replacement must be registered first,
        or the request would fail as declined by every pool."""
        provider = self.view.config.providers.get(self.provider.name)
        if provider is not None and self.pool.name in provider.pools:
            replacement = self.view.pool_launcher_id(self.provider.name,
                                                     self.pool.name)
            if replacement is None or replacement == self.launcher_id or \
                    replacement not in self.registered_pool_ids():
                return
        for handler in list(self.handlers):
            if handler.starting is not None and not handler.starting.done():
                continue
            if handler.done or not handler.paused or any(
                    not launcher.complete
                    for launcher in handler.launchers.values()):
                continue
            handler.decline("pool reconfigured while paused")
            self._drop_handler(handler)

    def _poll_handlers(self) -> None:
        for handler in list(self.handlers):
            if handler.starting is not None and not handler.starting.done():
                continue
            if handler.poll():
                self._drop_handler(handler)

    def _drop_handler(self, handler) -> None:
        """Forget a finished handler and give back its count (handlers
        kept only to finish a decline were never counted)."""
        self.handlers.remove(handler)
        if handler.counted:
            handler.counted = False
            self.provider.quota.end_request()

    # Request selection --------------------------------------------------

    def registered_pool_ids(self) -> set:
        return {p.id for p in self.services.registry.pools() if p.id}

    def _assign_requests(self) -> None:
        labels = set(self.pool.labels)
        requests = [r for r in self.services.request_cache.values()
                    if r.state == RequestState.REQUESTED]
        requests.sort(key=lambda r: (
            len(set(r.node_types) - labels), r.priority))
        # One snapshot per pass: the registry and our handlers do not
        # change meaningfully while we walk the queue.
        pools = self.services.registry.pools()
        handled = {h.request.id for h in self.handlers}
        for request in requests:
            if self.stopping:
                return
            if self.launcher_id in request.declined_by:
                continue
            if request.id in handled:
                continue
            skip = self._skip_reason(request, labels, pools)
            if skip is not None:
                self._why(request, *skip)
                continue
            # A paused pool takes no new work but still turns down what
            # it can never serve, so such requests fail promptly.
            paused = self.paused
            if paused and not self._decline_reason(request):
                self._why(request, why.PAUSED_QUOTA, self._pause_text())
                continue
            guard = self.services.zk_client.guard()
            try:
                self.services.requests.lock_request(
                    request, blocking=False, contended=True)
            except exceptions.LockError:
                continue
            if (request.state != RequestState.REQUESTED
                    or self.launcher_id in request.declined_by):
                self.services.requests.unlock_request(request)
                continue
            handler = RequestHandler(self._context, request, guard)
            reason = self._decline_reason(request)
            if reason:
                code = why.DECLINED if set(request.node_types) <= labels \
                    else why.LABEL_NOT_SERVED
                try:
                    handler.decline(reason, code)
                except CONNECTION_ERRORS:
                    self.handlers.append(handler)  # poll() finishes it
                continue
            if paused or not self.provider.quota.begin_request():
                # Paused, or max-concurrency reached meanwhile (another
                # pool of the provider took a request).
                self.services.requests.unlock_request(request)
                self._why(request, *((why.PAUSED_QUOTA, self._pause_text())
                                     if paused else self._concurrency()))
                continue
            handler.counted = True
            self.handlers.append(handler)
            if not self.provider.launches_nodes:
                # Existing hosts go to the requests in priority order, as
                # this loop takes them: started one after the other, a
                # lower one never takes the host a higher one was about
                # to find free.
                self._start(handler)
                continue
            # Accepting and creating the node records takes several
            # ZooKeeper round trips: do it off this thread so a burst of
            # requests is taken in parallel.
            handler.starting = self._start_pool.submit(self._start, handler)

    def _start(self, handler) -> None:
        try:
            handler.start()
        except Exception as e:
            if is_connection_error(e):
                # The handler's next poll starts it again (or takes it
                # back after a lost session).
                handler.log.info("Start interrupted by ZooKeeper (%r)", e)
                return
            handler.log.exception("Could not start request")
            try:
                handler.decline("an error occurred")
            except CONNECTION_ERRORS:
                pass  # poll() finishes the decline
        finally:
            self.wake()

    def _skip_reason(self, request, labels, pools) -> Optional[tuple]:
        """Apply the yielding rules (who else could serve this better)
        and the limits that make the pool wait: why the pool leaves the
        request alone for now, as the journal's ``(code, text)``; None to
        take it (or decline it)."""
        wanted = set(request.node_types)
        candidates = [
            p for p in pools
            if p.id and p.id != self.launcher_id
            and p.id not in request.declined_by
            and wanted <= set(p.supported_labels or ())]
        if request.provider and request.provider != self.provider.name:
            if any(p.provider_name == request.provider for p in candidates):
                return why.YIELDED, "it asks for provider %s" % (
                    request.provider)
        my_priority = self.pool.priority
        for p in candidates:
            if request.provider == self.provider.name and \
                    p.provider_name != request.provider:
                continue  # the request asked for us, not for them
            # Compare the numbers as given: 0 is the highest priority
            # there is, not "unset".  A record without one (None) gets
            # the config's default.
            if not p.paused and \
                    schema.pool_priority(p.priority, None) < my_priority:
                # (A ComponentInfo's ``name`` is its znode's.)
                return why.YIELDED, "pool %s/%s has a higher priority" % (
                    p.provider_name, p.to_dict().get("name"))
        if not wanted <= labels and candidates:
            return why.LABEL_NOT_SERVED, "%s not in this pool; left to " \
                "%d other pool(s)" % (sorted(wanted - labels),
                                      len(candidates))
        if wanted <= labels:
            busy = sorted(label for label in wanted
                          if not self.provider.label_available(label))
            if busy:  # e.g. every static host of a label is busy
                return why.WAITING_NODE, "no free node of %s" % (
                    ", ".join(busy))
            excess = self._tenant_excess(request)
            if excess:
                return why.TENANT_LIMIT, "tenant %s: %s" % (
                    request.tenant_name, ", ".join(excess))
        if self._at_max_concurrency():
            return self._concurrency()
        return None

    def _why(self, request, code: str, text: str) -> None:
        self.journal.set_reason(request.id, self._context.pool_key, code,
                                text)

    def _pause_text(self) -> str:
        """Why the pool is paused: the limit its paused handler met."""
        for handler in self.handlers:
            if handler.paused and handler.trace.pause_reason:
                return "%s, serving %s" % (handler.trace.pause_reason,
                                           handler.request.id)
        return "quota"

    def _concurrency(self) -> tuple:
        return why.MAX_CONCURRENCY, "provider %s handles %d requests" % (
            self.provider.name, self.provider.quota.requests_handled)

    def _at_max_concurrency(self) -> bool:
        """Whether the provider's pools together handle ``max-concurrency``
        requests already (unset, 0 or less: no limit)."""
        limit = self.provider.config.max_concurrency
        at_limit = limit > 0 and self.provider.quota.requests_handled >= limit
        if at_limit and not self._limited:
            self.log.debug("Request handling limited: %d requests handled "
                           "by provider %s (max-concurrency)",
                           self.provider.quota.requests_handled,
                           self.provider.name)
        self._limited = at_limit
        return at_limit

    def _tenant_excess(self, request) -> list:
        """The tenant resource limits (``cores``...) the request would
        exceed; empty when it fits."""
        limits = self.view.config.tenant_resource_limits.get(
            request.tenant_name) if request.tenant_name else None
        if limits is None:
            return []
        remaining = tenant_limits_quota(limits.limits)
        remaining.subtract(tenant_usage(self.services.node_cache.values(),
                                        request.tenant_name))
        for label in request.node_types:
            remaining.subtract(self.provider.quota.quota_for_label(
                label, self.pool.name))
        return remaining.exceeded()

    def _decline_reason(self, request):
        if self.pool.max_servers <= 0:
            return "pool is disabled by max_servers"
        missing = [t for t in request.node_types
                   if t not in self.pool.labels
                   or t in self.provider.quota.error_labels]
        if missing:
            return "node type(s) %s not available" % sorted(set(missing))
        if not all(self.provider.images_available(self.pool.labels[t])
                   for t in request.node_types):
            return "images are not available"
        spent = sorted({t for t in request.node_types
                        if not self.provider.capacity_left(
                            self.pool.labels[t], self.pool)})
        if spent:
            # Capacity fallback: every option of the label is cooling
            # down; another provider may serve the request meanwhile.
            return "no capacity option left for %s (cooling down)" % spent
        try:
            if not self.provider.quota.has_provider_quota(
                    request.node_types, self.pool):
                return "it would exceed quota"
        except exceptions.RuntimeConfigurationException as e:
            return "node type(s) not available: %s" % e
        return None
