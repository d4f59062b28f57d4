# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""A fake IBM Cloud (IAM token service, resource manager, VPC API) on
loopback, plain HTTP.

The real ``ibm-vpc`` and ``ibm-platform-services`` clients talk to it:
:meth:`FakeIbmVpc.write_credentials` writes the env-style credentials
file (``VPC_APIKEY``, ``VPC_AUTH_URL``, ``VPC_URL``,
``RESOURCE_MANAGER_URL``) that points them here.

* ``POST /identity/token``: IAM's API-key grant; answers a JWT (the SDK
  decodes its ``exp``) that every other route requires as bearer token;
  a wrong key gets IAM's 400 ``BXNIM0415E``.
* ``/v2/resource_groups`` (GET, POST): the resource manager.
* ``/v1/...``: the VPC API.  Every request must carry ``version``
  (``YYYY-MM-DD``) and ``generation=2``.  Lists page with ``limit``
  (default :attr:`page_size`) and ``start``, giving ``next.href``.
  Collections: ``vpcs``, ``subnets``, ``keys``, ``instance/profiles``,
  ``images``, ``floating_ips`` (POST, DELETE), ``instances`` (POST,
  DELETE) and ``PUT instances/{id}/network_interfaces/{nic}/
  floating_ips/{fip}``.  Errors carry the API's body
  (``{"errors": [{"code", "message", "more_info"}], "trace"}``).

What the cloud does on its own happens at the start of each request
(``_reconcile``; records are made and changed in
tests/fakes/ibmvpc_records.py): instances go ``pending`` -> ``starting`` ->
``running`` over :attr:`start_delay` seconds (or end ``failed`` with a
``status_reasons`` entry, see :meth:`fail_instances`), floating IPs go
``pending`` -> ``available`` after :attr:`fip_delay`, deleted instances
stay ``deleting`` for :attr:`delete_delay` seconds and leave their
floating IPs unbound.

Faults: :attr:`faults` (:class:`tests.fakes.faults.Faults`) answers a
route (``"POST instances"``, ``"GET floating_ips"``, ``"DELETE
instances"``...) with an error instead of handling it;
:attr:`max_instances` refuses creates beyond it with a 400 quota error;
:attr:`hold_instances` keeps instances ``starting``.
:attr:`counts` counts requests by route.

Not modelled: volumes (the boot volume is only named on the instance),
security groups, network ACLs, instance actions, dedicated hosts,
image export/import through object storage, IAM token refresh by
refresh token, request rate limits (a 429 only through :attr:`faults`).
"""

import collections
import itertools
import json
import re
import threading
import time
import urllib.parse
import uuid

import jwt

from tests.fakes.faults import Faults
from tests.fakes.ibmvpc_records import ApiError, VpcRecords
from tests.fakes.jsonhttp import JsonHandler, ThreadingServer

API_KEY = "fake-api-key"
ACCOUNT = "fake-account"
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SIMPLE = ("vpcs", "subnets", "keys", "instance/profiles", "images",
           "floating_ips", "instances")
_ATTACH = re.compile(r"^/v1/instances/(?P<vm>[^/]+)/network_interfaces/"
                     r"(?P<nic>[^/]+)/floating_ips/(?P<fip>[^/]+)$")


def _now_text():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _Handler(JsonHandler):
    def _serve(self, method):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        status, body, headers = self.server.fake.handle(
            method, parsed.path, query, raw, self.headers)
        self._send(status, body, headers)


class FakeIbmVpc(VpcRecords):
    """The fake cloud; :meth:`start` it, point clients at :attr:`url`.

    It starts with VPC ``np-vpc``, zone ``us-south-1`` subnet
    ``sn-nodepool``, SSH key ``np-key``, profiles ``cx2-2x4`` and
    ``bx2-4x16``, provider images ``ibm-debian-12`` and
    ``ibm-ubuntu-22-04`` and resource group ``Default``.
    """

    def __init__(self, region="us-south"):
        self.region = region
        self.lock = threading.Lock()
        self.faults = Faults()
        self.counts = collections.Counter()
        self.page_size = 50
        self.start_delay = 0.3
        self.fip_delay = 0.2
        self.delete_delay = 0.2
        self.max_instances = None
        # True: instances stay "starting" (a node that never comes up).
        self.hold_instances = False
        self._fail_next = []
        self._ids = itertools.count(1)
        self._tokens = set()
        self.groups = {}
        self.items = {name: {} for name in _SIMPLE}
        self._server = None
        self.url = None
        # The object storage image files come from (tests/fakes/ibmcos.py).
        self.cos = None
        self.image_delay = 0.2
        self.add_resource_group("Default")
        vpc = self._put("vpcs", {"name": "np-vpc"})
        self.vpc_id = vpc["id"]
        self._put("subnets", {
            "name": "sn-nodepool", "zone": {"name": "us-south-1"},
            "vpc": {"id": vpc["id"], "name": "np-vpc"},
            "ipv4_cidr_block": "10.240.0.0/24"})
        self._put("keys", {"name": "np-key", "type": "rsa",
                           "public_key": "ssh-rsa AAAAfake"})
        for name, cores, gb in (("cx2-2x4", 2, 4), ("bx2-4x16", 4, 16)):
            self.items["instance/profiles"][name] = {
                "name": name, "family": name[:2],
                "vcpu_count": {"type": "fixed", "value": cores},
                "memory": {"type": "fixed", "value": gb}}
        self.add_image("ibm-debian-12", family="Debian GNU/Linux",
                       version="12.x Bookworm/Stable")
        self.add_image("ibm-ubuntu-22-04", family="Ubuntu Linux",
                       version="22.04 LTS Jammy Jellyfish")

    # Life cycle ----------------------------------------------------------

    def start(self):
        self._server = ThreadingServer(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        threading.Thread(target=self._server.serve_forever,
                         name="fake-ibmvpc", daemon=True).start()
        self.url = "http://127.0.0.1:%d" % self._server.server_address[1]
        with self.lock:
            for collection, records in self.items.items():
                for record in records.values():
                    record["href"] = "%s/v1/%s/%s" % (
                        self.url, collection,
                        record.get("id") or record["name"])
        return self

    def stop(self):
        self.faults.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def write_credentials(self, path, api_key=API_KEY):
        """An env-style credentials file pointing the SDKs here."""
        path.write_text("\n".join([
            "VPC_AUTH_TYPE=iam",
            "VPC_APIKEY=%s" % api_key,
            "VPC_AUTH_URL=%s" % self.url,
            "VPC_URL=%s/v1" % self.url,
            "RESOURCE_MANAGER_URL=%s" % self.url]
            + (["RESOURCE_CONTROLLER_URL=%s" % self.cos.url]
               if self.cos else []) + [""]))
        return str(path)

    # Seeding and inspection ---------------------------------------------

    def _new_id(self, prefix="r006"):
        return "%s-%08d" % (prefix, next(self._ids))

    def _put(self, collection, record):
        record = dict(record, id=self._new_id(),
                      created_at=_now_text())
        record.setdefault("href", "%s/v1/%s/%s" % (
            self.url or "", collection, record["id"]))
        self.items[collection][record["id"]] = record
        return record

    def add_resource_group(self, name):
        with self.lock:
            group = {"id": uuid.uuid4().hex, "name": name,
                     "account_id": ACCOUNT, "state": "ACTIVE"}
            self.groups[group["id"]] = group
            return group

    def add_image(self, name, owner_type="provider", status="available",
                  family="Debian GNU/Linux", version="12",
                  architecture="amd64"):
        return self._put("images", {
            "name": name, "status": status, "owner_type": owner_type,
            "visibility": "public" if owner_type == "provider" else "private",
            "operating_system": {
                "name": name, "family": family, "version": version,
                "architecture": architecture, "vendor": "fake",
                "display_name": "%s %s" % (family, version),
                "dedicated_host_only": False}})

    def group_id(self, name):
        with self.lock:
            for group in self.groups.values():
                if group["name"] == name:
                    return group["id"]
        return None

    def names(self, collection):
        with self.lock:
            self._reconcile()
            return sorted(r["name"] for r in self.items[collection].values())

    def by_name(self, collection, name):
        with self.lock:
            self._reconcile()
            for record in self.items[collection].values():
                if record["name"] == name:
                    return json.loads(json.dumps(record))
        return None

    def plant_instance(self, name, group_name, running=True):
        """An instance that nodepool did not make (a leak, a stranger)."""
        group = self.group_id(group_name) or self.add_resource_group(
            group_name)["id"]
        image = next(iter(self.items["images"].values()))
        subnet = next(iter(self.items["subnets"].values()))
        with self.lock:
            record = self._make_instance({
                "name": name, "profile": {"name": "cx2-2x4"},
                "resource_group": {"id": group}, "image": {"id": image["id"]},
                "zone": {"name": "us-south-1"},
                "primary_network_interface": {
                    "name": "eth0", "subnet": {"id": subnet["id"]}}})
            if running:
                record["status"] = "running"
                record["_ready_at"] = 0
            return record

    def plant_floating_ip(self, name, group_name):
        group = self.group_id(group_name) or self.add_resource_group(
            group_name)["id"]
        with self.lock:
            return self._make_fip({"name": name, "resource_group": {
                "id": group}, "zone": {"name": "us-south-1"}})

    def fail_instances(self, count=1, code="cannot_start_capacity"):
        """The next ``count`` instances end ``failed`` (status reason
        ``code``) instead of running."""
        with self.lock:
            self._fail_next.extend([code] * count)

    # Requests --------------------------------------------------------------

    def handle(self, method, path, query, raw, headers):
        route = self._route(method, path)
        self.counts[route] += 1
        fault = self.faults.before(route)
        if fault is not None:
            return fault
        try:
            if path == "/identity/token":
                return self._token(raw)
            self._authorize(headers)
            with self.lock:
                self._reconcile()
                if path.startswith("/v2/resource_groups"):
                    return self._groups(method, raw)
                if path.startswith("/v1/"):
                    self._check_version(query)
                    return self._vpc(method, path, query, raw)
            raise ApiError(404, "not_found", "No route for %s" % path)
        except ApiError as e:
            return e.status, e.body(), {}
        except Exception as e:  # a bug of the fake: a server error
            return 500, ApiError(500, "internal_error", repr(e)).body(), {}

    @staticmethod
    def _route(method, path):
        if _ATTACH.match(path):
            return "PUT instance_floating_ip"
        if path.startswith("/v1/"):
            rest = path[4:]
            if rest.startswith("instance/profiles"):
                return "%s instance/profiles" % method
            return "%s %s" % (method, rest.split("/")[0])
        if path.startswith("/v2/"):
            return "%s %s" % (method, path[4:].split("/")[0])
        return "%s %s" % (method, path.rsplit("/", 1)[-1])

    def _token(self, raw):
        form = dict(urllib.parse.parse_qsl(raw.decode()))
        if form.get("grant_type") != "urn:ibm:params:oauth:grant-type:apikey":
            return 400, {"errorCode": "BXNIM0109E",
                         "errorMessage": "Unsupported grant type"}, {}
        if form.get("apikey") != API_KEY:
            return 400, {"errorCode": "BXNIM0415E",
                         "errorMessage": "Provided API key could not be "
                                         "found."}, {}
        now = int(time.time())
        token = jwt.encode({"iat": now, "exp": now + 3600,
                            "account": {"bss": ACCOUNT},
                            "jti": uuid.uuid4().hex}, "fake-ibm-iam-signing-secret-0123456789",
                           algorithm="HS256")
        with self.lock:
            self._tokens.add(token)
        return 200, {"access_token": token, "refresh_token": "not-modelled",
                     "token_type": "Bearer", "expires_in": 3600,
                     "expiration": now + 3600}, {}

    def token_valid(self, value):
        """Whether an Authorization header holds a token we issued."""
        token = (value or "")[len("Bearer "):] if (value or "").startswith(
            "Bearer ") else ""
        with self.lock:
            return token in self._tokens

    def _authorize(self, headers):
        if not self.token_valid(headers.get("Authorization")):
            raise ApiError(401, "not_authorized",
                           "The request is not authorized")

    @staticmethod
    def _check_version(query):
        version = query.get("version")
        if not version:
            raise ApiError(400, "missing_version",
                           "The version query parameter is required")
        if not _VERSION.match(version):
            raise ApiError(400, "bad_version", "Invalid version %s" % version)
        if query.get("generation") != "2":
            raise ApiError(400, "bad_generation",
                           "generation must be 2 for VPC")

    def _groups(self, method, raw):
        if method == "GET":
            return 200, {"resources": list(self.groups.values())}, {}
        if method == "POST":
            body = json.loads(raw or b"{}")
            name = body.get("name")
            if not name or any(g["name"] == name
                               for g in self.groups.values()):
                return 400, {"message": "bad or duplicate name %s" % name,
                             "status_code": 400}, {}
            group = {"id": uuid.uuid4().hex, "name": name,
                     "account_id": ACCOUNT, "state": "ACTIVE"}
            self.groups[group["id"]] = group
            return 201, {"id": group["id"],
                         "crn": "crn:v1:bluemix:public:resource-controller"
                                "::a/%s::resource-group:%s" % (
                                    ACCOUNT, group["id"])}, {}
        raise ApiError(405, "method_not_allowed", "Not allowed")

    # VPC ----------------------------------------------------------------

    def _vpc(self, method, path, query, raw):
        match = _ATTACH.match(path)
        if match and method == "PUT":
            return 201, self._public(self._attach(**match.groupdict())), {}
        rest = path[len("/v1/"):]
        for collection in _SIMPLE:
            if rest == collection and method == "GET":
                return 200, self._page(collection, query), {}
            if rest == collection and method == "POST":
                body = json.loads(raw or b"{}")
                if collection == "instances":
                    record = self._make_instance(body)
                elif collection == "floating_ips":
                    record = self._make_fip(body)
                elif collection == "images":
                    record = self._import_image(body)
                else:
                    break
                return 201, self._public(record), {}
            if rest.startswith(collection + "/"):
                key = rest[len(collection) + 1:]
                record = self.items[collection].get(key)
                if record is None:
                    raise ApiError(404, "not_found",
                                   "%s %s not found" % (collection, key))
                if method == "GET":
                    return 200, self._public(record), {}
                if method == "DELETE" and collection in (
                        "instances", "floating_ips", "images"):
                    self._delete(collection, record)
                    return 204, None, {}
        raise ApiError(404, "not_found", "No route for %s %s" % (
            method, path))

    def _page(self, collection, query):
        records = sorted(self.items[collection].values(),
                         key=lambda r: r.get("created_at", "") + r.get("id", r["name"]))
        records = [r for r in records if self._matches(r, query)]
        limit = int(query.get("limit") or self.page_size)
        start = int(query.get("start") or 0)
        page = records[start:start + limit]
        base = "%s/v1/%s" % (self.url, collection)
        key = collection.split("/")[-1]
        body = {key: [self._public(r) for r in page], "limit": limit,
                "first": {"href": base + "?limit=%d" % limit},
                "total_count": len(records)}
        if start + limit < len(records):
            body["next"] = {"href": "%s?limit=%d&start=%d" % (
                base, limit, start + limit)}
        return body

    @staticmethod
    def _matches(record, query):
        group = query.get("resource_group.id")
        if group and (record.get("resource_group") or {}).get("id") != group:
            return False
        name = query.get("name")
        return not name or record.get("name") == name

    @staticmethod
    def _public(record):
        return {k: v for k, v in record.items() if not k.startswith("_")}
