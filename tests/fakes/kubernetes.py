# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""A fake Kubernetes API server (plus OpenShift's project API) on loopback.

The real ``kubernetes`` client talks to it over HTTPS (a certificate of the
test CA) through a kubeconfig the fake writes (:meth:`FakeKubernetes.
write_kubeconfig`).  It keeps namespaces, service accounts, secrets, roles,
role bindings and pods in memory and answers with the API's shapes: objects
with ``metadata`` (uid, resourceVersion, creationTimestamp), ``List``
documents, and ``Status`` documents for errors with the real reasons and
codes (401 Unauthorized, 403 Forbidden, 404 NotFound, 409 AlreadyExists,
422 Invalid).

What the cluster's controllers do happens at the start of each request
(:meth:`FakeKubernetes._reconcile`), so a client that polls sees it:

* pods go from ``Pending`` to ``Running`` (or :attr:`pod_outcome`) and
  get a ``spec.nodeName`` once ``pod_start_delay`` seconds have passed,
  unless held (:meth:`hold_pods`);
* secrets of type ``kubernetes.io/service-account-token`` get ``token``
  and ``ca.crt`` once ``token_delay`` seconds have passed (the token
  controller); the token then authenticates to the fake;
* deleted namespaces stay ``Terminating`` for ``namespace_finalize_delay``
  seconds, then vanish with everything in them.

OpenShift: ``POST /apis/project.openshift.io/v1/projectrequests`` makes a
namespace that also reads as a ``Project``; a service account created in
a project gets a token secret listed in its ``secrets`` at once (the
OpenShift service-account controllers).

Faults: :attr:`http_faults` (a :class:`tests.fakes.faults.Faults`) answers
a route (``"POST rolebindings"``, ``"GET pods"``, ``"DELETE namespaces"``,
``"POST projectrequests"``...) with an error instead of handling it;
:attr:`max_pods` makes pod creates beyond it fail with a 403 "exceeded
quota" like a ResourceQuota.  :attr:`counts` counts requests by route.
"""

import base64
import collections
import datetime
import itertools
import json
import re
import secrets
import ssl
import threading
import time
import urllib.parse
import uuid

import yaml

from tests.fakes.faults import Faults, lose
from tests.fakes.jsonhttp import JsonHandler, ThreadingServer

NODE_NAME = "fake-node-1"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

# Collections by URL prefix: (api prefix, collection) -> (kind, key).
# The key names the collection in :attr:`FakeKubernetes.objects` and in
# route names.
_NAMESPACED = {
    ("/api/v1", "serviceaccounts"): ("ServiceAccount", "serviceaccounts"),
    ("/api/v1", "secrets"): ("Secret", "secrets"),
    ("/api/v1", "pods"): ("Pod", "pods"),
    ("/apis/rbac.authorization.k8s.io/v1", "roles"): ("Role", "roles"),
    ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"):
        ("RoleBinding", "rolebindings"),
    ("/apis/authorization.openshift.io/v1", "rolebindings"):
        ("RoleBinding", "openshift-rolebindings"),
}
_API_VERSIONS = {
    "/api/v1": "v1",
    "/apis/rbac.authorization.k8s.io/v1": "rbac.authorization.k8s.io/v1",
    "/apis/authorization.openshift.io/v1": "authorization.openshift.io/v1",
}
_NS_PATH = re.compile(
    r"^(?P<api>/api/v1|/apis/[^/]+/v1)/namespaces/(?P<ns>[^/]+)"
    r"/(?P<coll>[^/]+)(?:/(?P<name>[^/]+))?$")
_NAMESPACE = re.compile(r"^/api/v1/namespaces(?:/(?P<name>[^/]+))?$")
_PROJECT = re.compile(
    r"^/apis/project.openshift.io/v1/(?P<coll>projects|projectrequests)"
    r"(?:/(?P<name>[^/]+))?$")


class ApiError(Exception):
    """An error answer: a ``Status`` document with ``code``."""

    def __init__(self, code, reason, message, kind=None, name=None,
                 causes=None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = {}
        if name is not None:
            self.details["name"] = name
        if kind is not None:
            self.details["kind"] = kind
        if causes:
            self.details["causes"] = causes

    def status(self):
        return _status("Failure", self.code, self.reason, self.message,
                       self.details)


def _status(status, code, reason, message, details):
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": status, "code": code}
    if reason:
        body["reason"] = reason
    if message:
        body["message"] = message
    if details:
        body["details"] = details
    return body


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def _b64(data):
    return base64.b64encode(data).decode()


class _Handler(JsonHandler):
    def _serve(self, method):
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        route = fake.route_of(method, url.path)
        fake.count(route)
        injected = fake.http_faults.before(route)
        if injected is not None:
            self._send(*injected)
            return
        try:
            fake.authenticate(self.headers.get("Authorization"))
            body = json.loads(raw) if raw else None
            status, answer = fake.handle(method, url.path, query, body)
        except ApiError as e:
            status, answer = e.code, e.status()
        except Exception as e:  # a bug in the fake: show it in the test
            status = 500
            answer = _status("Failure", 500, "InternalError",
                             "fake bug: %r" % (e,), None)
        how = fake.http_faults.after(route)
        if how is not None:
            if lose(self, how, fake.http_faults):
                return
            status = 500
            answer = _status("Failure", 500, "InternalError",
                             "injected: answer lost", None)
        self._send(status, answer, {})


class _Server(ThreadingServer):
    def finish_request(self, request, client_address):
        try:
            request = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        super().finish_request(request, client_address)


class FakeKubernetes:
    """The fake cluster; :meth:`start` it, then write a kubeconfig.

    :param certs: the test CA's files (``ca.pem``, ``server.crt``,
        ``server.key``).
    """

    def __init__(self, certs):
        self.certs = certs
        self.lock = threading.RLock()
        #: (collection key, namespace or "", name) -> object
        self.objects = {}
        self.counts = collections.Counter()
        self.http_faults = Faults()
        self.admin_token = "admin-" + secrets.token_hex(8)
        self.tokens = {self.admin_token}
        self.pod_start_delay = 0.0
        #: The phase pods reach after ``pod_start_delay`` (``Failed``: the
        #: container exits at once, an image that cannot run).
        self.pod_outcome = "Running"
        self.token_delay = 0.0
        self.namespace_finalize_delay = 0.0
        #: Pods allowed in the whole cluster (None: no quota).
        self.max_pods = None
        self._held_pods = False
        self._due = {}  # object key -> monotonic time of its next change
        self._versions = itertools.count(1)
        self._server = None
        self._thread = None

    # Life cycle ---------------------------------------------------------

    def start(self):
        server = _Server(("127.0.0.1", 0), _Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certs["server.crt"],
                                self.certs["server.key"])
        server.ssl_context = context
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name="fake-kubernetes", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.http_faults.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)
            self._server = None

    @property
    def url(self):
        return "https://127.0.0.1:%d" % self._server.server_address[1]

    def write_kubeconfig(self, path, contexts=("admin-cluster.local",),
                         current="admin-cluster.local", bad_contexts=()):
        """Write a kubeconfig naming the fake; returns its path.

        Every context of ``contexts`` uses the admin token;
        ``bad_contexts`` use a token the fake refuses.  ``current`` is the
        ``current-context`` (None: none).
        """
        users = [{"name": "admin", "user": {"token": self.admin_token}},
                 {"name": "stranger", "user": {"token": "not-a-token"}}]
        entries = [{"name": name, "context": {
            "cluster": "fake", "user": "admin", "namespace": "default"}}
            for name in contexts]
        entries += [{"name": name, "context": {
            "cluster": "fake", "user": "stranger"}} for name in bad_contexts]
        data = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "fake", "cluster": {
                "server": self.url,
                "certificate-authority": self.certs["ca.pem"]}}],
            "users": users, "contexts": entries}
        if current is not None:
            data["current-context"] = current
        with open(path, "w") as f:
            yaml.safe_dump(data, f)
        return str(path)

    # Steering -----------------------------------------------------------

    def hold_pods(self, held=True):
        """Keep new and pending pods ``Pending`` (never scheduled)."""
        with self.lock:
            self._held_pods = held

    def count(self, route):
        with self.lock:
            self.counts[route] += 1

    def add_namespace(self, name, labels=None):
        """Put a namespace into the cluster (one nodepool did not make)."""
        with self.lock:
            self._create("namespaces", "", {
                "metadata": {"name": name, "labels": dict(labels or {})}},
                "Namespace")

    def add_pod(self, namespace, name, labels=None):
        """Put a pod (of somebody else's making) into ``namespace``."""
        with self.lock:
            self._create("pods", namespace, {
                "metadata": {"name": name, "labels": dict(labels or {})},
                "spec": {"containers": [{"name": name, "image": "x"}]}},
                "Pod")

    def namespaces(self):
        """Names of the namespaces that exist (terminating included)."""
        with self.lock:
            return sorted(name for (coll, _, name) in self.objects
                          if coll == "namespaces")

    def get(self, coll, namespace, name):
        """The stored object (a copy), or None."""
        with self.lock:
            obj = self.objects.get((coll, namespace, name))
            return json.loads(json.dumps(obj)) if obj else None

    def names(self, coll, namespace):
        with self.lock:
            return sorted(name for (c, ns, name) in self.objects
                          if c == coll and ns == namespace)

    @staticmethod
    def route_of(method, path):
        """The route name of a request, for faults and counts."""
        for pattern in (_NS_PATH, _NAMESPACE, _PROJECT):
            match = pattern.match(path)
            if match is None:
                continue
            groups = match.groupdict()
            coll = groups.get("coll") or "namespaces"
            if groups.get("api", "").startswith("/apis/authorization.open"):
                coll = "openshift-" + coll
            return "%s %s" % (method, coll)
        return "%s %s" % (method, path)

    # Requests -----------------------------------------------------------

    def authenticate(self, header):
        with self.lock:
            token = (header or "").rpartition(" ")[2]
            if token not in self.tokens:
                raise ApiError(401, "Unauthorized", "Unauthorized")

    def handle(self, method, path, query, body):
        with self.lock:
            self._reconcile()
            match = _NAMESPACE.match(path)
            if match:
                return self._namespaces(method, match.group("name"), query,
                                        body)
            match = _PROJECT.match(path)
            if match:
                return self._projects(method, match.group("coll"),
                                      match.group("name"), query, body)
            match = _NS_PATH.match(path)
            if match and (match.group("api"), match.group("coll")) in \
                    _NAMESPACED:
                return self._namespaced(method, match, query, body)
            raise ApiError(404, "NotFound",
                           "the server could not find the requested "
                           "resource")

    def _namespaces(self, method, name, query, body):
        if name is None:
            if method == "GET":
                return 200, self._list("NamespaceList", "namespaces", "",
                                       query)
            if method == "POST":
                self._validate_name(body, "Namespace", _DNS_LABEL)
                return 201, self._create("namespaces", "", body, "Namespace")
        elif method == "GET":
            return 200, self._existing("namespaces", "", name, "namespaces")
        elif method == "DELETE":
            self._existing("namespaces", "", name, "namespaces")
            self._terminate(name)
            return 200, _status("Success", 200, None, None,
                                {"name": name, "kind": "namespaces"})
        raise ApiError(405, "MethodNotAllowed", "method not allowed")

    def _projects(self, method, coll, name, query, body):
        if coll == "projectrequests" and method == "POST" and name is None:
            self._validate_name(body, "ProjectRequest", _DNS_LABEL)
            namespace = {"metadata": dict(body["metadata"])}
            ns = self._create("namespaces", "", namespace, "Namespace",
                              openshift=True)
            return 201, dict(self._as_project(ns), kind="Project")
        if coll == "projects":
            if name is None and method == "GET":
                listed = self._list("ProjectList", "namespaces", "", query)
                listed["items"] = [self._as_project(ns)
                                   for ns in listed["items"]]
                listed["apiVersion"] = "project.openshift.io/v1"
                return 200, listed
            if name is not None and method == "GET":
                return 200, self._as_project(
                    self._existing("namespaces", "", name, "projects"))
            if name is not None and method == "DELETE":
                self._existing("namespaces", "", name, "projects")
                self._terminate(name)
                return 200, _status("Success", 200, None, None,
                                    {"name": name, "kind": "projects"})
        raise ApiError(405, "MethodNotAllowed", "method not allowed")

    def _namespaced(self, method, match, query, body):
        kind, coll = _NAMESPACED[(match.group("api"), match.group("coll"))]
        api_version = _API_VERSIONS[match.group("api")]
        namespace, name = match.group("ns"), match.group("name")
        if name is None and method == "POST":
            ns = self._existing("namespaces", "", namespace, "namespaces")
            if ns["status"]["phase"] == "Terminating":
                raise ApiError(
                    403, "Forbidden", "%s is forbidden: unable to create new "
                    "content in namespace %s because it is being terminated"
                    % (kind, namespace), kind=coll)
            self._validate_name(body, kind, _DNS_SUBDOMAIN)
            if kind == "Pod":
                self._admit_pod(body)
            obj = self._create(coll, namespace, body, kind, api_version)
            return 201, obj
        if name is None and method == "GET":
            self._existing("namespaces", "", namespace, "namespaces")
            return 200, self._list(kind + "List", coll, namespace, query,
                                   api_version)
        if name is not None and method == "GET":
            return 200, self._existing(coll, namespace, name,
                                       match.group("coll"))
        if name is not None and method == "DELETE":
            obj = self._existing(coll, namespace, name, match.group("coll"))
            del self.objects[(coll, namespace, name)]
            return 200, obj
        raise ApiError(405, "MethodNotAllowed", "method not allowed")

    # Storage ------------------------------------------------------------

    def _existing(self, coll, namespace, name, resource):
        obj = self.objects.get((coll, namespace, name))
        if obj is None:
            raise ApiError(404, "NotFound", '%s "%s" not found'
                           % (resource, name), kind=resource, name=name)
        return obj

    def _list(self, kind, coll, namespace, query, api_version="v1"):
        wanted = {}
        for term in filter(None, query.get("labelSelector", "").split(",")):
            key, _, value = term.partition("=")
            wanted[key] = value
        items = []
        for (c, ns, _), obj in sorted(self.objects.items()):
            if c != coll or ns != namespace:
                continue
            labels = obj["metadata"].get("labels") or {}
            if all(labels.get(k) == v for k, v in wanted.items()):
                items.append(obj)
        return {"kind": kind, "apiVersion": api_version,
                "metadata": {"resourceVersion": str(next(self._versions))},
                "items": items}

    def _create(self, coll, namespace, body, kind, api_version="v1",
                openshift=False):
        metadata = dict(body.get("metadata") or {})
        name = metadata["name"]
        if (coll, namespace, name) in self.objects:
            raise ApiError(409, "AlreadyExists", '%s "%s" already exists'
                           % (coll, name), kind=coll, name=name)
        metadata.update(uid=str(uuid.uuid4()), creationTimestamp=_now(),
                        resourceVersion=str(next(self._versions)))
        if namespace:
            metadata["namespace"] = namespace
        obj = json.loads(json.dumps(dict(body, metadata=metadata)))
        obj.update(kind=kind, apiVersion=api_version)
        key = (coll, namespace, name)
        if kind == "Namespace":
            obj["status"] = {"phase": "Active"}
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            if openshift:
                metadata.setdefault("annotations", {})[
                    "openshift.io/requester"] = "admin"
                obj["metadata"] = metadata
        elif kind == "Pod":
            obj["status"] = {"phase": "Pending"}
            self._due[key] = time.monotonic() + self.pod_start_delay
        elif kind == "Secret":
            if obj.get("type") == "kubernetes.io/service-account-token":
                self._due[key] = time.monotonic() + self.token_delay
        elif kind == "ServiceAccount" and self._is_project(namespace):
            token_name = "%s-token-%s" % (name, secrets.token_hex(3))
            self._store_token_secret(namespace, token_name, name)
            obj["secrets"] = [{"name": token_name}]
        self.objects[key] = obj
        return obj

    def _is_project(self, namespace):
        ns = self.objects.get(("namespaces", "", namespace))
        return bool(ns) and "openshift.io/requester" in (
            ns["metadata"].get("annotations") or {})

    def _store_token_secret(self, namespace, name, account):
        self.objects[("secrets", namespace, name)] = {
            "kind": "Secret", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace,
                         "uid": str(uuid.uuid4()),
                         "annotations": {
                             "kubernetes.io/service-account.name": account}},
            "type": "kubernetes.io/service-account-token",
            "data": self._token_data()}

    def _token_data(self):
        token = "sa-" + secrets.token_hex(12)
        self.tokens.add(token)
        with open(self.certs["ca.pem"], "rb") as f:
            ca = f.read()
        return {"token": _b64(token.encode()), "ca.crt": _b64(ca),
                "namespace": _b64(b"")}

    def _as_project(self, ns):
        return {"kind": "Project", "apiVersion": "project.openshift.io/v1",
                "metadata": ns["metadata"], "spec": ns.get("spec", {}),
                "status": ns["status"]}

    def _terminate(self, name):
        ns = self.objects[("namespaces", "", name)]
        if ns["status"]["phase"] != "Terminating":
            ns["status"]["phase"] = "Terminating"
            ns["metadata"]["deletionTimestamp"] = _now()
            self._due[("namespaces", "", name)] = (
                time.monotonic() + self.namespace_finalize_delay)

    # Validation and admission --------------------------------------------

    def _validate_name(self, body, kind, pattern):
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be an object")
        name = (body.get("metadata") or {}).get("name")
        causes = []
        if not name:
            causes.append(("metadata.name", "name or generateName is "
                           "required"))
        elif len(name) > 63 or not pattern.match(name):
            causes.append(("metadata.name", "a lowercase RFC 1123 name "
                           "must consist of lower case alphanumeric "
                           "characters or '-'"))
        for key, value in ((body.get("metadata") or {}).get("labels")
                           or {}).items():
            if not isinstance(value, str) or len(value) > 63 or \
                    not _LABEL_VALUE.match(value):
                causes.append(("metadata.labels", "invalid label value "
                               "%r for %s" % (value, key)))
        if kind == "Pod":
            containers = (body.get("spec") or {}).get("containers") or []
            if not containers:
                causes.append(("spec.containers", "Required value"))
            for index, container in enumerate(containers):
                for field in ("name", "image"):
                    if not container.get(field):
                        causes.append(("spec.containers[%d].%s"
                                       % (index, field), "Required value"))
        if causes:
            raise ApiError(
                422, "Invalid", '%s "%s" is invalid: %s' % (
                    kind, name, "; ".join("%s: %s" % c for c in causes)),
                kind=kind.lower() + "s", name=name,
                causes=[{"reason": "FieldValueInvalid", "field": field,
                         "message": message} for field, message in causes])

    def _admit_pod(self, body):
        if self.max_pods is None:
            return
        used = sum(1 for (coll, _, _) in self.objects if coll == "pods")
        if used >= self.max_pods:
            raise ApiError(
                403, "Forbidden", 'pods "%s" is forbidden: exceeded quota: '
                'compute-resources, requested: pods=1, used: pods=%d, '
                'limited: pods=%d' % (body["metadata"]["name"], used,
                                      self.max_pods), kind="pods",
                name=body["metadata"]["name"])

    # Controllers ----------------------------------------------------------

    def _reconcile(self):
        """What the cluster's controllers would have done by now."""
        now = time.monotonic()
        for key, due in list(self._due.items()):
            if due > now:
                continue
            obj = self.objects.get(key)
            coll = key[0]
            if obj is None:
                del self._due[key]
            elif coll == "pods":
                if not self._held_pods:
                    obj["status"] = {"phase": self.pod_outcome,
                                     "podIP": "10.0.0.%d" % (
                                         next(self._versions) % 250 + 2)}
                    obj["spec"]["nodeName"] = NODE_NAME
                    del self._due[key]
            elif coll == "secrets":
                obj["data"] = dict(obj.get("data") or {},
                                   **self._token_data())
                del self._due[key]
            elif coll == "namespaces":
                name = key[2]
                for other in [k for k in self.objects if k[1] == name]:
                    del self.objects[other]
                del self.objects[key]
                del self._due[key]
