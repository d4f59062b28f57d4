# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""A fake Azure (Entra ID token endpoint plus Resource Manager) on loopback.

The real azure-identity credential and the real azure-mgmt clients talk to
it over HTTPS (a certificate of the test CA; clients trust it through
``REQUESTS_CA_BUNDLE``).  It keeps resource groups, virtual machines, NICs,
public IPs, disks and images in memory, answers the calls a nodepool
adapter makes (PUT/GET/DELETE, collection lists with paging, long-running
operation status URLs, usages, resource SKUs, instance views) and checks
what ARM would: a bearer token it issued, an ``api-version``, wire-format
(camelCase, ``properties``) bodies and the references between resources
(a NIC in use by a VM, a public IP in use by a NIC, an attached disk
cannot be deleted).

Tests steer it with :meth:`FakeAzure.fail_put` (synchronous ARM errors
such as a quota refusal), :meth:`FakeAzure.fail_provisioning` (the
resource is accepted, then ends ``Failed``), :meth:`FakeAzure.hold`
(provisioning stays ``Creating`` until released) and read per-operation
call counters in :attr:`FakeAzure.counts` (``"PUT virtualMachines"``,
``"LIST publicIPAddresses"``, ``"DELETE disks"``, ``"token"``...).
:attr:`FakeAzure.http_faults` (a :class:`tests.fakes.faults.Faults`, by the
same names) answers calls with a 429 or 5xx instead of handling them
(:meth:`FakeAzure.fail`) or loses the answer of a call it handled
(:meth:`FakeAzure.lose_answer`).
"""

import collections
import itertools
import json
import re
import ssl
import threading
import urllib.parse
import uuid

from nodepool import driver
from nodepool.driver.azure import AzureDriver
from tests.fakes.faults import Faults, lose
from tests.fakes.jsonhttp import JsonHandler, ThreadingServer

SUBSCRIPTION = "00000000-0000-0000-0000-00000000cafe"
TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT_ID = "nodepool-client"
CLIENT_SECRET = "nodepool-secret"

# Resource types by the lower-case last segment of their ARM type.
TYPES = {
    "virtualmachines": "Microsoft.Compute/virtualMachines",
    "disks": "Microsoft.Compute/disks",
    "images": "Microsoft.Compute/images",
    "networkinterfaces": "Microsoft.Network/networkInterfaces",
    "publicipaddresses": "Microsoft.Network/publicIPAddresses",
    "virtualnetworks": "Microsoft.Network/virtualNetworks",
}

# Sizes the fake knows: name -> (family, vCPUs, memory GB).
SKUS = {
    "Standard_B1ls": ("standardBSFamily", 1, 0.5),
    "Standard_B2s": ("standardBSFamily", 2, 4),
    "Standard_D2s_v3": ("standardDSv3Family", 2, 8),
    "Standard_D4s_v3": ("standardDSv3Family", 4, 16),
}

_RESOURCE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)"
    r"(?:/providers/(?P<ns>[^/]+)/(?P<type>[^/]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub_type>[^/]+)(?:/(?P<sub_name>[^/]+))?)?)?"
    r")?$", re.IGNORECASE)
_USAGES = re.compile(r"^/subscriptions/[^/]+/providers/Microsoft.Compute/"
                     r"locations/(?P<loc>[^/]+)/usages$", re.IGNORECASE)
_SKUS = re.compile(r"^/subscriptions/[^/]+/providers/Microsoft.Compute/skus$",
                   re.IGNORECASE)
_SNAKE = re.compile(r"^[a-z]+_[a-z_]+$")


class ArmError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class _Fault:
    def __init__(self, kind, status, code, message, count, name,
                 rtype=None):
        self.kind = kind
        self.rtype = rtype
        self.status = status
        self.code = code
        self.message = message
        self.count = count
        self.name = name


class _Handler(JsonHandler):
    def _serve(self, method):
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        route = fake.route_of(method, url.path)
        injected = fake.http_faults.before(route) if route else None
        if injected is not None:
            self._send(*injected)
            return
        try:
            status, body, headers = fake.handle(
                method, url.path, query, raw, self.headers,
                "https://%s" % self.headers.get("Host"))
        except ArmError as e:
            status, headers = e.status, {}
            body = {"error": {"code": e.code, "message": e.message}}
        except Exception as e:  # a bug in the fake: show it in the test
            status, headers = 500, {}
            body = {"error": {"code": "FakeBug", "message": repr(e)}}
        how = fake.http_faults.after(route) if route else None
        if how is not None:
            if lose(self, how, fake.http_faults):
                return
            status, headers = 500, {}
            body = {"error": {"code": "InternalServerError",
                              "message": "injected: answer lost"}}
        self._send(status, body, headers)


class _Server(ThreadingServer):
    def finish_request(self, request, client_address):
        # The TLS handshake runs in the connection's own thread, so one
        # slow client never holds up the accept loop.
        try:
            request = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        super().finish_request(request, client_address)


class FakeAzure:
    """The fake cloud; :meth:`start` it, point clients at :attr:`url`.

    :param certs: the test CA's files (``server.crt``, ``server.key``).
    :param page_size: list responses are paged with ``nextLink`` beyond
        this many items.
    :param limits: usage limits by name (``cores``, ``virtualMachines``,
        a family such as ``standardBSFamily``).
    """

    def __init__(self, certs, location="centralus", page_size=50,
                 limits=None):
        self.certs = certs
        self.location = location
        self.page_size = page_size
        self.limits = {"cores": 100, "virtualMachines": 25000,
                       "standardBSFamily": 100, "standardDSv3Family": 100}
        self.limits.update(limits or {})
        self.lock = threading.RLock()
        self.counts = collections.Counter()
        self.requests = []  # (method, path) of every ARM call
        self.groups = {}  # lower rg name -> record
        # (lower rg, lower type, lower name) -> resource dict
        self.resources = {}
        self.tokens = set()
        self.faults = []
        # HTTP faults by route name (see route_of), around the handling.
        self.http_faults = Faults()
        self.held = {}  # lower type -> set of lower names (None: all)
        self.failed_reason = {}  # resource key -> (code, message)
        self.operations = {}
        self.blobs = {}  # disk name -> {"sig", "data"}
        self.image_data = {}  # image name -> bytes of its source disk
        self._ips = itertools.count(4)
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
            name="fake-azure", daemon=True)
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

    def auth_data(self, **extra):
        """The content of an auth file for this fake."""
        data = {"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET,
                "subscriptionId": SUBSCRIPTION, "tenantId": TENANT,
                "activeDirectoryEndpointUrl": self.url,
                "resourceManagerEndpointUrl": self.url}
        data.update(extra)
        return data

    # Test controls ------------------------------------------------------

    def fail_put(self, rtype, code, message="injected failure", status=409,
                 count=1, name=None):
        """The next ``count`` PUTs of ``rtype`` (e.g. ``virtualMachines``;
        only ``name`` if given) are refused with an ARM error."""
        with self.lock:
            self.faults.append(_Fault("put", status, code, message, count,
                                      name, rtype.lower()))

    def fail_provisioning(self, rtype, code="AllocationFailed",
                          message="Allocation failed", count=1):
        """The next ``count`` PUTs of ``rtype`` are accepted, then the
        resource turns ``provisioningState: Failed`` (instance view status
        ``ProvisioningState/failed/<code>``)."""
        with self.lock:
            self.faults.append(_Fault("provision:" + rtype.lower(), 0, code,
                                      message, count, None))

    def fail(self, route, status, code, message="injected failure",
             times=1, retry_after=None):
        """Answer the next ``times`` calls of ``route`` (``"PUT
        virtualMachines"``, ``"LIST networkInterfaces"``...) with an ARM
        error instead of handling them."""
        self.http_faults.fail(
            route, status, {"error": {"code": code, "message": message}},
            times, retry_after)

    def lose_answer(self, route, how="drop", times=1):
        """Handle the next ``times`` calls of ``route``, then lose their
        answers (see :meth:`Faults.lose_answer`)."""
        self.http_faults.lose_answer(route, how, times)

    @staticmethod
    def route_of(method, path):
        """The name of a resource call's route (``"PUT virtualMachines"``,
        ``"LIST disks"``), None for other calls."""
        match = _RESOURCE.match(path)
        if not match or match.group("type") is None or \
                match.group("sub_type") is not None:
            return None
        if match.group("name") is None:
            return "LIST " + match.group("type") if method == "GET" else None
        return "%s %s" % (method, match.group("type"))

    def hold(self, rtype, name=None):
        """Keep new (or ``name``d) resources of ``rtype`` ``Creating``."""
        with self.lock:
            names = self.held.setdefault(rtype.lower(), set())
            names.add(name.lower() if name else None)

    def release(self, rtype=None):
        """Let held resources finish provisioning (all types if None)."""
        with self.lock:
            if rtype is None:
                self.held.clear()
            else:
                self.held.pop(rtype.lower(), None)
            for key, resource in self.resources.items():
                if rtype is not None and key[1] != rtype.lower():
                    continue
                props = resource.setdefault("properties", {})
                if props.get("provisioningState") == "Creating":
                    props["provisioningState"] = "Succeeded"

    def add_resource(self, rtype, name, properties=None, tags=None,
                     group="nodepool", location=None):
        """Put a resource into the fake directly (no call counted)."""
        with self.lock:
            self.groups.setdefault(group.lower(), {
                "name": group, "location": location or self.location})
            resource = self._make(group, rtype.lower(), name, {
                "location": location or self.location, "tags": tags or {},
                "properties": dict(properties or {})})
            resource["properties"].setdefault("provisioningState",
                                              "Succeeded")
            if rtype.lower() == "virtualnetworks":
                for subnet in resource["properties"].get("subnets", []):
                    subnet["id"] = "%s/subnets/%s" % (resource["id"],
                                                      subnet["name"])
            self.resources[(group.lower(), rtype.lower(),
                            name.lower())] = resource
            return resource

    def get(self, rtype, name, group="nodepool"):
        with self.lock:
            return self.resources.get(
                (group.lower(), rtype.lower(), name.lower()))

    def names(self, rtype, group="nodepool"):
        with self.lock:
            return sorted(r["name"] for k, r in self.resources.items()
                          if k[0] == group.lower() and k[1] == rtype.lower())

    def all_names(self, group="nodepool"):
        """``{type: [names]}`` of every resource but virtual networks."""
        found = {}
        with self.lock:
            for (rg, rtype, _), r in self.resources.items():
                if rg == group.lower() and rtype != "virtualnetworks":
                    found.setdefault(rtype, []).append(r["name"])
        return {k: sorted(v) for k, v in found.items()}

    # Request handling ---------------------------------------------------

    def handle(self, method, path, query, raw, headers, base):
        tenant_prefix = "/" + TENANT
        if path.startswith(tenant_prefix):
            return self._identity(method, path[len(tenant_prefix):], raw,
                                  base)
        if path.startswith("/fake-blob/"):
            return self._blob(method, path.rsplit("/", 1)[1], query, raw,
                              headers)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            raise ArmError(400, "InvalidRequestContent", "Not JSON")
        with self.lock:
            self.requests.append((method, path))
        auth = headers.get("Authorization") or ""
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            raise ArmError(401, "InvalidAuthenticationToken",
                           "The access token is invalid.")
        if "api-version" not in query:
            raise ArmError(400, "MissingApiVersionParameter",
                           "The api-version query parameter is required.")
        if path.startswith("/fake-operations/"):
            return self._operation(path.rsplit("/", 1)[1])
        match = _USAGES.match(path)
        if match:
            self.count("LIST usages")
            return 200, {"value": self._usages()}, {}
        if _SKUS.match(path):
            self.count("LIST skus")
            return 200, {"value": self._skus()}, {}
        match = _RESOURCE.match(path)
        if not match or match.group("sub") != SUBSCRIPTION:
            raise ArmError(404, "NotFound", "No route for %s" % path)
        with self.lock:
            return self._resource(method, match, query, body, base)

    def count(self, key):
        with self.lock:
            self.counts[key] += 1

    def _identity(self, method, path, raw, base):
        if path == "/v2.0/.well-known/openid-configuration":
            self.count("openid-configuration")
            root = base + "/" + TENANT
            return 200, {
                "token_endpoint": root + "/oauth2/v2.0/token",
                "authorization_endpoint": root + "/oauth2/v2.0/authorize",
                "issuer": root + "/v2.0",
                "device_authorization_endpoint":
                    root + "/oauth2/v2.0/devicecode",
                "end_session_endpoint": root + "/oauth2/v2.0/logout",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post"],
                "response_types_supported": ["code"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "jwks_uri": root + "/discovery/v2.0/keys",
            }, {}
        if path == "/oauth2/v2.0/token" and method == "POST":
            self.count("token")
            form = dict(urllib.parse.parse_qsl(raw.decode()))
            if (form.get("client_id") != CLIENT_ID
                    or form.get("client_secret") != CLIENT_SECRET):
                return 401, {"error": "invalid_client",
                             "error_description": "AADSTS7000215: bad "
                             "client secret"}, {}
            token = "fake-token-%s" % uuid.uuid4().hex
            with self.lock:
                self.tokens.add(token)
            return 200, {"token_type": "Bearer", "expires_in": 3600,
                         "ext_expires_in": 3600, "access_token": token}, {}
        raise ArmError(404, "NotFound", "No identity route %s" % path)

    # Resources ----------------------------------------------------------

    def _resource(self, method, match, query, body, base):
        rg = match.group("rg")
        rg_key = rg.lower()
        ns_type = match.group("type")
        if ns_type is None:
            if method == "PUT":
                self.counts["PUT resourceGroups"] += 1
                existed = rg_key in self.groups
                self.groups[rg_key] = {
                    "id": "/subscriptions/%s/resourceGroups/%s" % (
                        SUBSCRIPTION, rg),
                    "name": rg, "location": (body or {}).get("location"),
                    "type": "Microsoft.Resources/resourceGroups",
                    "properties": {"provisioningState": "Succeeded"}}
                return (200 if existed else 201), self.groups[rg_key], {}
            if method == "GET":
                self.counts["GET resourceGroups"] += 1
                if rg_key not in self.groups:
                    raise ArmError(404, "ResourceGroupNotFound",
                                   "Resource group '%s' could not be found."
                                   % rg)
                return 200, self.groups[rg_key], {}
            raise ArmError(405, "MethodNotAllowed", method)
        rtype = ns_type.lower()
        if rtype not in TYPES:
            raise ArmError(400, "InvalidResourceType", ns_type)
        name = match.group("name")
        sub_type = match.group("sub_type")
        if name is None:
            if method != "GET":
                raise ArmError(405, "MethodNotAllowed", method)
            self.counts["LIST " + ns_type] += 1
            return self._list(rg_key, rtype, query, base)
        key = (rg_key, rtype, name.lower())
        if sub_type is not None:
            return self._sub_resource(method, key, sub_type,
                                      match.group("sub_name"), base)
        if method == "GET":
            self.counts["GET " + ns_type] += 1
            return 200, self._existing(key, ns_type, name), {}
        if method == "PUT":
            self.counts["PUT " + ns_type] += 1
            return self._put(rg, key, ns_type, name, body, base)
        if method == "DELETE":
            self.counts["DELETE " + ns_type] += 1
            return self._delete(key, ns_type, name, base)
        if method == "PATCH":
            self.counts["PATCH " + ns_type] += 1
            resource = self._existing(key, ns_type, name)
            if "tags" in (body or {}):
                resource["tags"] = dict(body["tags"])
            return 200, resource, {}
        raise ArmError(405, "MethodNotAllowed", method)

    def _existing(self, key, ns_type, name):
        resource = self.resources.get(key)
        if resource is None:
            raise ArmError(404, "ResourceNotFound",
                           "The Resource '%s/%s' under resource group '%s' "
                           "was not found." % (TYPES[key[1]], name, key[0]))
        return resource

    def _sub_resource(self, method, key, sub_type, sub_name, base=None):
        resource = self._existing(key, key[1], key[2])
        if key[1] == "disks" and method == "POST" and sub_type in (
                "beginGetAccess", "endGetAccess"):
            self.counts["POST " + sub_type] += 1
            props = resource["properties"]
            if sub_type == "beginGetAccess":
                if props.get("diskState") != "ReadyToUpload":
                    raise ArmError(409, "OperationNotAllowed",
                                   "Disk %s is not ready to upload" % key[2])
                sig = uuid.uuid4().hex
                self.blobs[key[2]] = {"sig": sig, "data": bytearray(
                    props["creationData"]["uploadSizeBytes"])}
                props["diskState"] = "ActiveUpload"
                result = {"accessSAS": "%s/fake-blob/%s?sv=2020&sig=%s"
                          % (base, key[2], sig)}
            else:
                if props.get("diskState") == "ActiveUpload":
                    props["diskState"] = "Unattached"
                blob = self.blobs.get(key[2])
                if blob:
                    blob["sig"] = None
                result = None
            op = uuid.uuid4().hex
            self.operations[op] = ("result", result)
            return 202, None, {
                "Location": "%s/fake-operations/%s?api-version=1"
                % (base, op)}
        if key[1] == "virtualmachines" and sub_type == "instanceView":
            self.counts["GET instanceView"] += 1
            state = resource["properties"]["provisioningState"]
            statuses = [{"code": "ProvisioningState/%s" % state.lower(),
                         "level": "Info"}]
            reason = self.failed_reason.get(key)
            if state == "Failed" and reason:
                statuses = [{"code": "ProvisioningState/failed/%s"
                             % reason[0], "level": "Error",
                             "displayStatus": "Provisioning failed",
                             "message": reason[1]}]
            return 200, {"statuses": statuses}, {}
        if key[1] == "virtualnetworks" and sub_type == "subnets":
            self.counts["GET subnets"] += 1
            for subnet in resource["properties"].get("subnets", []):
                if subnet["name"].lower() == (sub_name or "").lower():
                    return 200, subnet, {}
            raise ArmError(404, "NotFound", "Subnet %s not found" % sub_name)
        raise ArmError(404, "NotFound", "No route %s" % sub_type)

    def _list(self, rg_key, rtype, query, base):
        items = sorted((r for k, r in self.resources.items()
                        if k[0] == rg_key and k[1] == rtype),
                       key=lambda r: r["name"])
        start = int(query.get("$skiptoken") or 0)
        page = items[start:start + self.page_size]
        body = {"value": page}
        if start + self.page_size < len(items):
            # Absolute, with the api-version, as ARM sends it.
            path = "/subscriptions/%s/resourceGroups/%s/providers/%s" % (
                SUBSCRIPTION, rg_key, TYPES[rtype])
            body["nextLink"] = "%s%s?%s" % (base, path, urllib.parse.urlencode(
                {"api-version": query["api-version"],
                 "$skiptoken": start + self.page_size}))
        return 200, body, {}

    def _make(self, rg, rtype, name, body):
        resource = {
            "id": "/subscriptions/%s/resourceGroups/%s/providers/%s/%s" % (
                SUBSCRIPTION, rg, TYPES[rtype], name),
            "name": name, "type": TYPES[rtype],
            "location": body.get("location"),
            "tags": dict(body.get("tags") or {}),
            "properties": json.loads(json.dumps(body.get("properties")
                                                or {})),
        }
        for extra in ("zones", "sku"):
            if extra in body:
                resource[extra] = body[extra]
        return resource

    def _put(self, rg, key, ns_type, name, body, base):
        rtype = key[1]
        if rg.lower() not in self.groups:
            raise ArmError(404, "ResourceGroupNotFound",
                           "Resource group '%s' could not be found." % rg)
        self._validate(rtype, body)
        for fault in self.faults:
            if (fault.kind == "put" and fault.count > 0
                    and (fault.name is None
                         or fault.name.lower() == name.lower())
                    and fault.rtype == rtype):
                fault.count -= 1
                raise ArmError(fault.status, fault.code, fault.message)
        existed = key in self.resources
        resource = self._make(rg, rtype, name, body)
        props = resource["properties"]
        if rtype == "publicipaddresses":
            version = props.get("publicIPAddressVersion", "IPv4")
            n = next(self._ips)
            props["ipAddress"] = ("20.1.%d.%d" % (n // 250, n % 250 + 1)
                                  if version == "IPv4"
                                  else "2001:db8::%x" % n)
        elif rtype == "networkinterfaces":
            self._attach_nic(resource)
        elif rtype == "virtualmachines":
            self._attach_vm(rg, resource)
        elif rtype == "disks":
            creation = props.get("creationData") or {}
            if creation.get("createOption") == "Upload":
                size = creation.get("uploadSizeBytes") or 0
                if size % 512 or not size:
                    raise ArmError(400, "InvalidParameter",
                                   "uploadSizeBytes must be a multiple of "
                                   "512")
                props["diskState"] = "ReadyToUpload"
        elif rtype == "images":
            os_disk = props.get("storageProfile", {}).get("osDisk", {})
            ref = (os_disk.get("managedDisk") or {}).get("id")
            if ref:
                disk = self.resources.get(self._ref(ref))
                if disk is None or disk["properties"].get(
                        "diskState") != "Unattached":
                    raise ArmError(400, "InvalidParameter",
                                   "Disk %s is not usable" % ref)
                blob = self.blobs.get(disk["name"].lower())
                self.image_data[name.lower()] = bytes(
                    blob["data"]) if blob else b""
        reason = None
        for fault in self.faults:
            if fault.kind == "provision:" + rtype and fault.count > 0:
                fault.count -= 1
                reason = (fault.code, fault.message)
                break
        held = self.held.get(rtype, set())
        if reason is not None:
            props["provisioningState"] = "Failed"
            self.failed_reason[key] = reason
        elif None in held or name.lower() in held:
            props["provisioningState"] = "Creating"
        else:
            props["provisioningState"] = "Succeeded"
        self.resources[key] = resource
        op = uuid.uuid4().hex
        self.operations[op] = ("put", key)
        # ARM answers a new disk with 202, other new resources with 201.
        status = 200 if existed else (202 if rtype == "disks" else 201)
        return status, resource, {
            "Azure-AsyncOperation": "%s/fake-operations/%s?api-version=1"
            % (base, op)}

    def _validate(self, rtype, body):
        if not isinstance(body, dict) or not body.get("location"):
            raise ArmError(400, "LocationRequired",
                           "The location property is required.")

        def walk(value, where):
            if isinstance(value, dict):
                for k, v in value.items():
                    if _SNAKE.match(k):
                        raise ArmError(
                            400, "InvalidRequestContent",
                            "Could not find member '%s' at %s" % (k, where))
                    if k != "tags":
                        walk(v, where + "." + k)
            elif isinstance(value, list):
                for item in value:
                    walk(item, where)
        walk(body, "body")
        props = body.get("properties") or {}
        if rtype == "virtualmachines":
            size = props.get("hardwareProfile", {}).get("vmSize")
            if size not in SKUS:
                raise ArmError(409, "SkuNotAvailable",
                               "The requested VM size %s is not available "
                               "in location '%s'." % (size, self.location))
            family, cores, _ = SKUS[size]
            used = self._used()
            for name, amount in (("cores", cores), (family, cores),
                                 ("virtualMachines", 1)):
                if used.get(name, 0) + amount > self.limits.get(
                        name, float("inf")):
                    raise ArmError(
                        409, "OperationNotAllowed",
                        "Operation could not be completed as it results in "
                        "exceeding approved %s quota. Location: %s, Current "
                        "Limit: %s, Current Usage: %s, Additional Required: "
                        "%s." % (name, self.location, self.limits[name],
                                 used.get(name, 0), amount))

    def _ref(self, resource_id):
        parts = resource_id.strip("/").split("/")
        # subscriptions/S/resourceGroups/RG/providers/NS/TYPE/NAME
        if len(parts) < 8:
            return None
        return (parts[3].lower(), parts[6].lower(), parts[7].lower())

    def _attach_nic(self, nic):
        for config in nic["properties"].get("ipConfigurations", []):
            props = config.setdefault("properties", {})
            subnet = props.get("subnet", {}).get("id")
            if not subnet or self.resources.get(self._ref(subnet)) is None:
                raise ArmError(400, "InvalidResourceReference",
                               "Subnet %s not found" % subnet)
            pip = props.get("publicIPAddress", {}).get("id")
            if pip:
                record = self.resources.get(self._ref(pip))
                if record is None:
                    raise ArmError(400, "InvalidResourceReference",
                                   "Public IP %s not found" % pip)
                if record["properties"].get("provisioningState") != \
                        "Succeeded":
                    raise ArmError(
                        400, "ReferencedResourceNotProvisioned",
                        "Public IP %s is not provisioned" % pip)
                record["properties"]["ipConfiguration"] = {
                    "id": "%s/ipConfigurations/%s" % (nic["id"],
                                                      config.get("name"))}
            n = next(self._ips)
            if props.get("privateIPAddressVersion") == "IPv6":
                props["privateIPAddress"] = "fd00::%x" % n
            else:
                props["privateIPAddress"] = "10.0.%d.%d" % (
                    n // 250, n % 250 + 1)
            props["privateIPAllocationMethod"] = "Dynamic"

    def _attach_vm(self, rg, vm):
        props = vm["properties"]
        for ref in props.get("networkProfile", {}).get(
                "networkInterfaces", []):
            nic = self.resources.get(self._ref(ref.get("id", "")))
            if nic is None:
                raise ArmError(400, "InvalidResourceReference",
                               "NIC %s not found" % ref.get("id"))
            nic["properties"]["virtualMachine"] = {"id": vm["id"]}
        os_disk = props.setdefault("storageProfile", {}).setdefault(
            "osDisk", {})
        disk_name = os_disk.get("name") or "%s_OsDisk_1_%s" % (
            vm["name"], uuid.uuid4().hex[:8])
        disk = self._make(rg, "disks", disk_name, {
            "location": vm["location"],
            "properties": {"diskSizeGB": os_disk.get("diskSizeGB", 30),
                           "diskState": "Attached"}})
        disk["managedBy"] = vm["id"]
        disk["properties"]["provisioningState"] = "Succeeded"
        self.resources[(rg.lower(), "disks", disk_name.lower())] = disk
        os_disk["name"] = disk_name
        os_disk.setdefault("managedDisk", {})["id"] = disk["id"]
        props["vmId"] = str(uuid.uuid4())

    def _delete(self, key, ns_type, name, base):
        resource = self.resources.get(key)
        if resource is None:
            return 204, None, {}
        rtype = key[1]
        if rtype == "disks":
            owner = resource.get("managedBy")
            if owner and self.resources.get(self._ref(owner)) is not None:
                raise ArmError(409, "OperationNotAllowed",
                               "Disk %s is attached to VM %s." % (name, owner))
        if rtype == "networkinterfaces":
            owner = resource["properties"].get("virtualMachine", {}).get("id")
            if owner and self.resources.get(self._ref(owner)) is not None:
                raise ArmError(400, "NicInUse",
                               "Network Interface %s is used by existing "
                               "resource %s." % (name, owner))
        if rtype == "publicipaddresses":
            config = resource["properties"].get("ipConfiguration", {})
            nic_ref = self._ref(config.get("id", "")) if config else None
            if nic_ref and self.resources.get(nic_ref) is not None:
                raise ArmError(400, "PublicIPAddressCannotBeDeleted",
                               "Public IP address %s can not be deleted "
                               "since it is still allocated to resource %s."
                               % (name, config["id"]))
        del self.resources[key]
        self.failed_reason.pop(key, None)
        op = uuid.uuid4().hex
        self.operations[op] = ("delete", key)
        return 202, None, {
            "Location": "%s/fake-operations/%s?api-version=1" % (base, op),
            "Retry-After": "0"}

    def _operation(self, op):
        with self.lock:
            kind, key = self.operations.get(op, (None, None))
            if kind is None:
                raise ArmError(404, "NotFound", "No operation %s" % op)
            self.counts["GET operation"] += 1
            if kind == "result":
                return 200, key, {}
            resource = self.resources.get(key)
            if kind == "delete":
                return (202 if resource is not None else 204), None, {}
            state = (resource or {}).get("properties", {}).get(
                "provisioningState", "Failed")
            status = {"Succeeded": "Succeeded", "Failed": "Failed"}.get(
                state, "InProgress")
            body = {"status": status}
            if status == "Failed":
                code, message = self.failed_reason.get(
                    key, ("Failed", "failed"))
                body["error"] = {"code": code, "message": message}
            return 200, body, {}

    # Page blobs (a managed disk's SAS upload URL) ------------------------

    def _blob(self, method, disk, query, raw, headers):
        with self.lock:
            blob = self.blobs.get(disk.lower())
            if blob is None or not blob["sig"] or \
                    query.get("sig") != blob["sig"]:
                raise ArmError(403, "AuthenticationFailed",
                               "Server failed to authenticate the request.")
            if method != "PUT" or query.get("comp") != "page" or \
                    headers.get("x-ms-page-write") != "update":
                raise ArmError(400, "InvalidQueryParameterValue",
                               "Only page updates are supported")
            match = re.match(r"bytes=(\d+)-(\d+)$",
                             headers.get("x-ms-range") or "")
            if not match:
                raise ArmError(400, "InvalidRange", "x-ms-range missing")
            start, end = int(match.group(1)), int(match.group(2))
            data = blob["data"]
            if (start % 512 or (end + 1) % 512 or end >= len(data)
                    or end - start + 1 != len(raw)
                    or len(raw) > 4 * 1024 * 1024):
                raise ArmError(416, "InvalidPageRange",
                               "Bad page range %d-%d" % (start, end))
            data[start:end + 1] = raw
            self.counts["PUT page"] += 1
        return 201, None, {}

    # Quota --------------------------------------------------------------

    def _used(self):
        used = collections.Counter()
        for (_, rtype, _), resource in self.resources.items():
            if rtype != "virtualmachines":
                continue
            size = resource["properties"].get("hardwareProfile", {}).get(
                "vmSize")
            family, cores, _ = SKUS.get(size, ("unknown", 0, 0))
            used["cores"] += cores
            used[family] += cores
            used["virtualMachines"] += 1
        return used

    def _usages(self):
        used = self._used()
        return [{"name": {"value": name, "localizedValue": name},
                 "currentValue": used.get(name, 0), "limit": limit,
                 "unit": "Count"}
                for name, limit in sorted(self.limits.items())]

    def _skus(self):
        skus = []
        for name, (family, cores, memory) in sorted(SKUS.items()):
            skus.append({
                "resourceType": "virtualMachines", "name": name,
                "tier": "Standard", "size": name.split("_", 1)[1],
                "family": family, "locations": [self.location],
                "capabilities": [
                    {"name": "vCPUs", "value": str(cores)},
                    {"name": "MemoryGB", "value": str(memory)}],
                "restrictions": []})
        # A non-VM SKU the adapter must skip.
        skus.append({"resourceType": "disks", "name": "Premium_LRS",
                     "locations": [self.location], "capabilities": []})
        return skus


class ShortTimeoutAzureDriver(AzureDriver):
    """``driver: azure`` for a launcher in the test process whose clients
    give up on an answer after :attr:`read_timeout` seconds (azure-core
    waits five minutes), so that a held answer times out in a test's
    time.  :func:`use_short_timeouts` registers it in place of the real
    driver; :func:`restore_azure` puts the real one back."""

    read_timeout: float = 300.0

    def get_adapter(self, provider_config, warm=True):
        from nodepool.driver.azure.adapter import AzureAdapter
        return AzureAdapter(provider_config, warm=warm,
                            client_options=dict(
                                read_timeout=self.read_timeout))


def use_short_timeouts(read_timeout: float) -> None:
    ShortTimeoutAzureDriver.read_timeout = read_timeout
    driver.register_driver("azure",
                           "tests.fakes.azure:ShortTimeoutAzureDriver")


def restore_azure() -> None:
    driver.register_driver("azure", "nodepool.driver.azure:AzureDriver")
