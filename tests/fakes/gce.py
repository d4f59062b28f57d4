# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""A fake Google Compute Engine API (compute v1, REST) on loopback HTTP.

The real ``google-cloud-compute`` clients talk to it through their REST
transport, with anonymous credentials and the fake's :attr:`FakeGce.url`
as API endpoint (see ``LoopbackGceDriver`` in tests/fixtures/clouds.py).  It serves what the
nodepool adapter calls, with GCE's wire format (camelCase JSON, resource
URLs, error bodies with ``errors[].reason``):

* instances: insert, list (paged with ``maxResults``/``pageToken``; an
  empty page has no ``items``), get, delete;
* zone operations: get.  Inserts and deletes answer with an operation
  that is ``PENDING``, then ``RUNNING``, then ``DONE``; an inserted
  instance appears (``PROVISIONING`` -> ``STAGING`` -> ``RUNNING``) while
  its operation runs, a deleted one goes ``STOPPING`` and disappears.
  Each step takes :attr:`FakeGce.step` seconds of wall-clock time,
  evaluated whenever a request comes in (no background thread);
* machineTypes get, images getFromFamily, regions get (``CPUS`` and
  ``INSTANCES`` quotas with their usage).

Inserts are checked as GCE would: the name, the machine type, the source
image, the disk type, the network, and the region's quotas (a refusal is
a 403 ``quotaExceeded``).  Tests steer it with :meth:`fail_operations`
(the next inserts' operations end with an error such as
``ZONE_RESOURCE_POOL_EXHAUSTED`` and make no instance),
:meth:`terminate_next` (the next instances end ``TERMINATED``),
:meth:`stall_next` (the next instances never get past ``STAGING``),
:meth:`add_instance` (plant an instance), and :attr:`http_faults` (a
:class:`tests.fakes.faults.Faults`, by route name, e.g. a 429
``rateLimitExceeded`` on ``"POST instances"``).  :attr:`counts` counts
the calls per route name.
"""

import collections
import heapq
import http.server
import itertools
import json
import re
import threading
import time
import urllib.parse

from tests.fakes.faults import Faults, lose
from tests.fakes.jsonhttp import JsonHandler, ThreadingServer

BASE = "/compute/v1"
PUBLIC = "https://www.googleapis.com" + BASE

# name -> (guestCpus, memoryMb)
MACHINE_TYPES = {
    "f1-micro": (1, 614),
    "e2-small": (2, 2048),
    "n1-standard-1": (1, 3840),
    "e2-standard-4": (4, 16384),
}
DISK_TYPES = ("pd-standard", "pd-balanced", "pd-ssd", "pd-extreme")
NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")

_ROUTES = (
    ("POST", re.compile(r"^/projects/(?P<p>[^/]+)/zones/(?P<z>[^/]+)"
                        r"/instances$"), "POST instances"),
    ("GET", re.compile(r"^/projects/(?P<p>[^/]+)/zones/(?P<z>[^/]+)"
                       r"/instances$"), "GET instances"),
    ("GET", re.compile(r"^/projects/(?P<p>[^/]+)/zones/(?P<z>[^/]+)"
                       r"/instances/(?P<n>[^/]+)$"), "GET instance"),
    ("DELETE", re.compile(r"^/projects/(?P<p>[^/]+)/zones/(?P<z>[^/]+)"
                          r"/instances/(?P<n>[^/]+)$"), "DELETE instance"),
    ("GET", re.compile(r"^/projects/(?P<p>[^/]+)/zones/(?P<z>[^/]+)"
                       r"/operations/(?P<n>[^/]+)$"), "GET operation"),
    ("GET", re.compile(r"^/projects/(?P<p>[^/]+)/zones/(?P<z>[^/]+)"
                       r"/machineTypes/(?P<n>[^/]+)$"), "GET machineType"),
    ("GET", re.compile(r"^/projects/(?P<p>[^/]+)/global/images/family"
                       r"/(?P<n>[^/]+)$"), "GET imageFamily"),
    ("GET", re.compile(r"^/projects/(?P<p>[^/]+)/regions/(?P<r>[^/]+)$"),
     "GET region"),
)


class GceError(Exception):
    """An API error as GCE sends it: status, reason and message."""

    def __init__(self, status, reason, message):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message

    def body(self):
        return {"error": {"code": self.status, "message": self.message,
                          "errors": [{"message": self.message,
                                      "domain": "global",
                                      "reason": self.reason}]}}


def not_found(what):
    return GceError(404, "notFound",
                    "The resource '%s' was not found" % what)


def quota_error(metric, limit, region):
    return GceError(403, "quotaExceeded",
                    "Quota '%s' exceeded.  Limit: %.1f in region %s."
                    % (metric, limit, region))


def rate_limit_body():
    """The body of GCE's 429 answer (for ``http_faults.fail``)."""
    return {"error": {"code": 429, "message": "Rate Limit Exceeded",
                      "status": "RESOURCE_EXHAUSTED",
                      "errors": [{"message": "Rate Limit Exceeded",
                                  "domain": "usageLimits",
                                  "reason": "rateLimitExceeded"}]}}


def last_segment(url):
    return (url or "").rstrip("/").rsplit("/", 1)[-1]


class _Handler(JsonHandler):
    content_type = "application/json; charset=UTF-8"

    def _serve(self, method):
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        route, params = fake.route_of(method, url.path)
        if route is not None:
            fake.count(route)
            injected = fake.http_faults.before(route)
            if injected is not None:
                self._send(*injected)
                return
        try:
            if route is None:
                raise GceError(404, "notFound", "No such path %s" % url.path)
            body = json.loads(raw) if raw else None
            status, answer = 200, fake.handle(route, params, query, body)
        except GceError as e:
            status, answer = e.status, e.body()
        except Exception as e:  # a bug in the fake: show it in the test
            status = 500
            answer = {"error": {"code": 500, "message": "fake: %r" % e}}
        how = fake.http_faults.after(route) if route else None
        if how is not None:
            if lose(self, how, fake.http_faults):
                return
            status = 500
            answer = {"error": {"code": 500, "message": "injected: lost",
                                "errors": [{"reason": "backendError",
                                            "message": "injected"}]}}
        self._send(status, answer, {})


class FakeGce:
    """The fake; :meth:`start` it and point clients at :attr:`url`.

    :param step: seconds each state of an operation or instance lasts.
    :param page_size: most instances per list page (the client's
        ``maxResults`` may ask for fewer).
    :param quotas: region quota limits (``CPUS``, ``INSTANCES``).
    """

    def __init__(self, project="nodepool-project", region="us-central1",
                 zone="us-central1-a", step=0.02, page_size=500,
                 quotas=None):
        self.project = project
        self.region = region
        self.zone = zone
        self.step = step
        self.page_size = page_size
        self.quotas = {"CPUS": 24.0, "INSTANCES": 100.0}
        self.quotas.update(quotas or {})
        self.machine_types = dict(MACHINE_TYPES)
        # (project, family) -> image record
        self.images = {}
        self.add_image("debian-cloud", "debian-12", "debian-12-bookworm-v1")
        self.networks = {"default"}
        self.lock = threading.RLock()
        self.counts = collections.Counter()
        self.http_faults = Faults()
        self.instances = {}      # name -> record (insertion order)
        self.operations = {}     # name -> record
        self._events = []        # heap of (due, seq, callable)
        self._seq = itertools.count()
        self._ids = itertools.count(1000)
        self._addresses = itertools.count(2)
        self._op_errors = []     # (code, message, http status) per insert
        self._terminate = 0
        self._stall = 0
        self.server = None
        self.thread = None

    # Life cycle -----------------------------------------------------------

    def start(self):
        self.server = ThreadingServer(("127.0.0.1", 0), _Handler)
        self.server.fake = self
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,),
            name="fake-gce", daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.http_faults.release()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(10)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server.server_port

    # Test controls --------------------------------------------------------

    def count(self, route):
        with self.lock:
            self.counts[route] += 1

    def add_image(self, project, family, name):
        self.images[(project, family)] = {
            "kind": "compute#image", "name": name, "family": family,
            "status": "READY", "id": str(abs(hash(name)) % 10 ** 12),
            "selfLink": "%s/projects/%s/global/images/%s" % (
                PUBLIC, project, name)}

    def fail_operations(self, code="ZONE_RESOURCE_POOL_EXHAUSTED",
                        message=None, count=1, http_status=503):
        """The next ``count`` inserts are accepted, then their operation
        ends ``DONE`` with error ``code`` and no instance is made."""
        message = message or (
            "The zone '%s' does not have enough resources available to "
            "fulfill the request." % self._zone_path())
        with self.lock:
            self._op_errors.extend([(code, message, http_status)] * count)

    def terminate_next(self, count=1):
        """The next ``count`` inserted instances end ``TERMINATED``."""
        with self.lock:
            self._terminate += count

    def stall_next(self, count=1):
        """The next ``count`` inserted instances stay ``STAGING`` and
        their operations ``RUNNING`` (until deleted)."""
        with self.lock:
            self._stall += count

    def add_instance(self, name, metadata=None, status="RUNNING",
                     machine_type="e2-small"):
        """Plant an instance (nodepool did not make it)."""
        with self.lock:
            record = self._instance_record(name, {
                "machineType": "zones/%s/machineTypes/%s" % (
                    self.zone, machine_type),
                "metadata": {"items": [{"key": k, "value": v} for k, v in
                                       (metadata or {}).items()]},
                "networkInterfaces": [{"network": "global/networks/default",
                                       "accessConfigs": [{}]}],
            })
            record["status"] = status
            self.instances[name] = record
            return record

    def instance(self, name):
        with self.lock:
            self._tick()
            record = self.instances.get(name)
            return json.loads(json.dumps(record)) if record else None

    def names(self):
        with self.lock:
            self._tick()
            return list(self.instances)

    def metadata(self, name):
        record = self.instance(name)
        return {i["key"]: i.get("value") for i in
                (record["metadata"].get("items") or ())}

    # Dispatch -------------------------------------------------------------

    def route_of(self, method, path):
        if not path.startswith(BASE + "/"):
            return None, None
        rest = path[len(BASE):]
        for verb, pattern, name in _ROUTES:
            match = pattern.match(rest)
            if verb == method and match:
                return name, match.groupdict()
        return None, None

    def handle(self, route, params, query, body):
        with self.lock:
            self._tick()
            if params.get("p") != self.project and route != \
                    "GET imageFamily":
                raise not_found("projects/%s" % params.get("p"))
            if "z" in params and params["z"] != self.zone:
                raise not_found("projects/%s/zones/%s" % (
                    params["p"], params["z"]))
            return getattr(self, "_" + route.replace(" ", "_").lower())(
                params, query, body)

    # Routes ---------------------------------------------------------------

    def _post_instances(self, params, query, body):
        name = (body or {}).get("name") or ""
        if not NAME.match(name):
            raise GceError(400, "invalid", "Invalid value for field "
                           "'resource.name': '%s'." % name)
        if name in self.instances:
            raise GceError(409, "alreadyExists", "The resource '%s/"
                           "instances/%s' already exists" % (
                               self._zone_path(), name))
        cores = self._machine_type_of(body.get("machineType"))[0]
        self._check_disks(body.get("disks") or [])
        for nic in body.get("networkInterfaces") or []:
            network = last_segment(nic.get("network"))
            if network not in self.networks:
                raise not_found("projects/%s/global/networks/%s" % (
                    self.project, network))
        self._check_quota(cores)
        error = self._op_errors.pop(0) if self._op_errors else None
        terminate = stall = False
        if error is None and self._terminate:
            self._terminate -= 1
            terminate = True
        elif error is None and self._stall:
            self._stall -= 1
            stall = True
        op = self._operation("insert", name)
        # Reserve the name at once, as GCE does.
        self.instances[name] = record = self._instance_record(name, body)
        record["status"] = "PENDING"
        step = self.step

        def started():
            op["status"] = "RUNNING"
            op["startTime"] = _now()
            if error is None:
                record["status"] = "PROVISIONING"
            else:
                self.instances.pop(name, None)

        def staging():
            if name in self.instances and error is None:
                record["status"] = "STAGING"

        def done():
            if stall:
                return
            if error is None and name in self.instances:
                record["status"] = "TERMINATED" if terminate else "RUNNING"
            self._finish(op, error)
        self._at(step, started)
        self._at(2 * step, staging)
        self._at(3 * step, done)
        return op

    def _get_instances(self, params, query, body):
        wanted = int(query.get("maxResults") or 500)
        size = max(1, min(wanted, self.page_size))
        start = int(query.get("pageToken") or 0)
        records = [r for r in self.instances.values()
                   if r["status"] != "PENDING"]
        page = records[start:start + size]
        answer = {"kind": "compute#instanceList",
                  "id": "projects/%s/zones/%s/instances" % (
                      self.project, self.zone),
                  "selfLink": "%s/%s/instances" % (PUBLIC,
                                                   self._zone_path())}
        if page:
            answer["items"] = page
        if start + size < len(records):
            answer["nextPageToken"] = str(start + size)
        return answer

    def _get_instance(self, params, query, body):
        record = self.instances.get(params["n"])
        if record is None or record["status"] == "PENDING":
            raise not_found("%s/instances/%s" % (self._zone_path(),
                                                 params["n"]))
        return record

    def _delete_instance(self, params, query, body):
        name = params["n"]
        record = self._get_instance(params, query, body)
        op = self._operation("delete", name)
        record["status"] = "STOPPING"

        def gone():
            self.instances.pop(name, None)
            self._finish(op, None)
        self._at(self.step, lambda: op.update(status="RUNNING"))
        self._at(2 * self.step, gone)
        return op

    def _get_operation(self, params, query, body):
        op = self.operations.get(params["n"])
        if op is None:
            raise not_found("%s/operations/%s" % (self._zone_path(),
                                                  params["n"]))
        return op

    def _get_machinetype(self, params, query, body):
        name = params["n"]
        found = self.machine_types.get(name)
        if found is None:
            raise not_found("%s/machineTypes/%s" % (self._zone_path(), name))
        record = {"kind": "compute#machineType", "name": name,
                  "id": str(abs(hash(name)) % 10 ** 9),
                  "zone": self.zone, "isSharedCpu": name == "f1-micro",
                  "selfLink": "%s/%s/machineTypes/%s" % (
                      PUBLIC, self._zone_path(), name)}
        cores, ram = found
        if cores is not None:
            record["guestCpus"] = cores
        if ram is not None:
            record["memoryMb"] = ram
        return record

    def _get_imagefamily(self, params, query, body):
        image = self.images.get((params["p"], params["n"]))
        if image is None:
            raise not_found("projects/%s/global/images/family/%s" % (
                params["p"], params["n"]))
        return image

    def _get_region(self, params, query, body):
        if params["r"] != self.region:
            raise not_found("projects/%s/regions/%s" % (self.project,
                                                        params["r"]))
        cores, count = self._usage()
        usage = {"CPUS": cores, "INSTANCES": count}
        return {"kind": "compute#region", "name": self.region,
                "status": "UP",
                "zones": ["%s/%s" % (PUBLIC, self._zone_path())],
                "quotas": [{"metric": metric, "limit": limit,
                            "usage": float(usage.get(metric, 0))}
                           for metric, limit in sorted(self.quotas.items())]}

    # Helpers --------------------------------------------------------------

    def _zone_path(self):
        return "projects/%s/zones/%s" % (self.project, self.zone)

    def _at(self, delay, func):
        heapq.heappush(self._events, (time.monotonic() + delay,
                                      next(self._seq), func))

    def _tick(self):
        now = time.monotonic()
        while self._events and self._events[0][0] <= now:
            _, _, func = heapq.heappop(self._events)
            func()

    def _operation(self, kind, target):
        name = "operation-%d-%06x" % (time.time() * 1000, next(self._seq))
        op = {"kind": "compute#operation", "id": str(next(self._ids)),
              "name": name, "operationType": kind, "status": "PENDING",
              "zone": "%s/%s" % (PUBLIC, self._zone_path()),
              "targetLink": "%s/%s/instances/%s" % (
                  PUBLIC, self._zone_path(), target),
              "progress": 0, "insertTime": _now(),
              "user": "nodepool@example.com",
              "selfLink": "%s/%s/operations/%s" % (
                  PUBLIC, self._zone_path(), name)}
        self.operations[name] = op
        return op

    def _finish(self, op, error):
        op.update(status="DONE", progress=100, endTime=_now())
        if error is not None:
            code, message, status = error
            op["error"] = {"errors": [{"code": code, "message": message}]}
            op["httpErrorStatusCode"] = status
            op["httpErrorMessage"] = http.HTTPStatus(status).phrase.upper()

    def _machine_type_of(self, url):
        match = re.match(r"^(.*/)?zones/([^/]+)/machineTypes/([^/]+)$",
                         url or "")
        name = match.group(3) if match else last_segment(url)
        if not match or match.group(2) != self.zone or \
                name not in self.machine_types:
            raise not_found("%s/machineTypes/%s" % (self._zone_path(), name))
        return self.machine_types[name]

    def _check_disks(self, disks):
        if len([d for d in disks if d.get("boot")]) != 1:
            raise GceError(400, "invalid", "Exactly one boot disk must be "
                           "specified.")
        for index, disk in enumerate(disks):
            params = disk.get("initializeParams") or {}
            source = params.get("sourceImage") or ""
            known = {i["selfLink"] for i in self.images.values()}
            short = {i["selfLink"][len(PUBLIC) + 1:]
                     for i in self.images.values()}
            if source not in known and source not in short:
                raise not_found(source)
            disk_type = params.get("diskType") or ""
            if not re.match(r"^(.*/)?zones/%s/diskTypes/(%s)$" % (
                    re.escape(self.zone), "|".join(DISK_TYPES)), disk_type):
                raise GceError(
                    400, "invalid", "Invalid value for field "
                    "'resource.disks[%d].initializeParams.diskType': '%s'."
                    % (index, disk_type))
            size = params.get("diskSizeGb")
            if size is not None and not str(size).isdigit():
                raise GceError(400, "invalid", "Invalid value for field "
                               "'resource.disks[%d].initializeParams."
                               "diskSizeGb': '%s'." % (index, size))

    def _usage(self):
        cores = count = 0
        for record in self.instances.values():
            count += 1
            if record["status"] != "TERMINATED":
                cores += self.machine_types.get(
                    last_segment(record["machineType"]), (0, 0))[0] or 0
        return cores, count

    def _check_quota(self, cores):
        used_cores, count = self._usage()
        if count + 1 > self.quotas["INSTANCES"]:
            raise quota_error("INSTANCES", self.quotas["INSTANCES"],
                              self.region)
        if used_cores + cores > self.quotas["CPUS"]:
            raise quota_error("CPUS", self.quotas["CPUS"], self.region)

    def _instance_record(self, name, body):
        host = next(self._addresses)
        nics = []
        for index, nic in enumerate(body.get("networkInterfaces") or []):
            record = {"kind": "compute#networkInterface",
                      "name": "nic%d" % index,
                      "network": "%s/projects/%s/global/networks/%s" % (
                          PUBLIC, self.project,
                          last_segment(nic.get("network"))),
                      "networkIP": "10.128.%d.%d" % (host // 250,
                                                     host % 250 + 2)}
            configs = []
            for config in nic.get("accessConfigs") or []:
                configs.append(dict(
                    config, kind="compute#accessConfig",
                    type=config.get("type", "ONE_TO_ONE_NAT"),
                    name=config.get("name", "External NAT"),
                    natIP="203.0.113.%d" % (host % 250 + 2)))
            if configs:
                record["accessConfigs"] = configs
            nics.append(record)
        disks = []
        for index, disk in enumerate(body.get("disks") or []):
            params = disk.get("initializeParams") or {}
            disks.append({"kind": "compute#attachedDisk", "index": index,
                          "boot": bool(disk.get("boot")),
                          "autoDelete": bool(disk.get("autoDelete")),
                          "type": "PERSISTENT", "mode": "READ_WRITE",
                          "deviceName": "persistent-disk-%d" % index,
                          "diskSizeGb": str(params.get("diskSizeGb", 10)),
                          "source": "%s/%s/disks/%s" % (
                              PUBLIC, self._zone_path(), name)})
        metadata = dict(body.get("metadata") or {})
        metadata.update(kind="compute#metadata", fingerprint="fp%d" % host)
        return {"kind": "compute#instance", "id": str(next(self._ids)),
                "name": name, "creationTimestamp": _now(),
                "zone": "%s/%s" % (PUBLIC, self._zone_path()),
                "machineType": "%s/%s/machineTypes/%s" % (
                    PUBLIC, self._zone_path(),
                    last_segment(body.get("machineType"))),
                "status": "PROVISIONING", "networkInterfaces": nics,
                "disks": disks, "metadata": metadata,
                "serviceAccounts": list(body.get("serviceAccounts") or []),
                "selfLink": "%s/%s/instances/%s" % (
                    PUBLIC, self._zone_path(), name)}


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00", time.gmtime())
