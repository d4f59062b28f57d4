# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""A small OpenStack cloud on loopback for tests.

:class:`FakeOpenStack` answers the Keystone v3, Nova, Glance and Neutron
calls the OpenStack driver makes, over real HTTP, so the real openstacksdk
(loaded from a clouds.yaml written by :meth:`FakeOpenStack.write_clouds`)
talks to it like to a cloud.  Everything lives in memory; the test changes
the cloud's behaviour through plain attributes:

* ``boot_paused``: new servers stay in BUILD until it is cleared;
* ``error_faults``: fault messages; each new server takes the first one
  and goes to ERROR with it instead of ACTIVE;
* ``create_errors`` / ``delete_errors``: ``(status, message)`` answers
  given (one each) to the next server creates / deletes;
* ``volume_limits``: the Cinder quota (``volumes``, ``gigabytes``);
  ``volume_service = False`` leaves Cinder out of the catalog;
* ``limits``: the compute quota (``instances``, ``cores``, ``ram``; -1 is
  unlimited), enforced on create with Nova's 403 "Quota exceeded";
* ``deleted_listings``: a deleted server is still listed, in status
  DELETED, by this many server GETs;
* ``faults``: a :class:`tests.fakes.faults.Faults` by route name
  (``"POST servers"``...): answers instead of a request (a 429 with
  ``Retry-After``, a 5xx: :meth:`FakeOpenStack.fail`) and answers lost
  after the request was carried out (:meth:`FakeOpenStack.lose_answer`).

``counts`` counts requests by route (``"POST servers"``,
``"GET servers/detail"``...); ``unknown`` collects requests no route knew.
"""

import collections
import hashlib
import http.server
import itertools
import json
import re
import socket
import threading
import urllib.parse
import uuid

import yaml

from tests.fakes.faults import Faults, lose

PROJECT_ID = "a6f5a0b1c2d34e5f8a9b0c1d2e3f4a5b"
USER_ID = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"
IMAGE_ID = "5c7a4b44-7d4e-4b4f-9b55-1d8c0b8e9a01"

FLAVORS = [
    # id, name, vcpus, ram (MiB), disk (GB)
    ("f-small", "m1.small", 2, 2048, 20),
    ("f-medium", "m1.medium", 4, 8192, 40),
    ("f-large", "m1.large", 8, 16384, 80),
]


class FakeOpenStack:
    """An in-memory cloud served over HTTP on 127.0.0.1 (random port)."""

    def __init__(self):
        self.lock = threading.RLock()
        self.counts = collections.Counter()
        self.unknown: list = []
        self._ids = itertools.count(10)
        self.boot_paused = False
        self.error_faults: list = []
        self.create_errors: list = []
        self.delete_errors: list = []
        self.deleted_listings = 0
        self.faults = Faults()
        self.limits = {"instances": 20, "cores": 100, "ram": 1000000}
        self.volume_service = True
        self.volume_limits = {"volumes": 100, "gigabytes": 1000000}
        self.azs = ["az1", "az2"]
        self.console_output = "fake console output\n"
        self.servers: dict = {}
        self.create_bodies: list = []
        self.image_bodies: list = []
        self.flavors = {fid: {"id": fid, "name": name, "vcpus": vcpus,
                              "ram": ram, "disk": disk, "swap": "",
                              "OS-FLV-EXT-DATA:ephemeral": 0,
                              "os-flavor-access:is_public": True,
                              "rxtx_factor": 1.0, "links": []}
                        for fid, name, vcpus, ram, disk in FLAVORS}
        self.images: dict = {}
        self.add_image("Fake Image", image_id=IMAGE_ID, owner="someone-else")
        self.networks: dict = {}
        self.subnets: dict = {}
        self.ports: dict = {}
        self.floating_ips: dict = {}
        self.add_network("private", "10.0.0.0/24")
        self.add_network("public", "203.0.113.0/24", external=True)
        self.add_network("ipv6", "2001:db8::/64", version=6)
        self._server = None
        self._thread = None
        self.url = None

    # Life cycle ---------------------------------------------------------

    def start(self) -> "FakeOpenStack":
        fake = self

        class Handler(_Handler):
            cloud = fake

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                       Handler)
        self._server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        args=(0.05,), name="fake-openstack",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.faults.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)

    def write_clouds(self, path, cloud="fake", region="RegionOne",
                     **extra) -> str:
        """Write a clouds.yaml naming this cloud ``cloud`` (``extra`` goes
        into its entry, e.g. ``image_format``); returns the path."""
        data = {"clouds": {cloud: dict(extra, **{
            "auth": {"auth_url": self.url + "/identity/v3",
                     "username": "nodepool", "password": "secret",
                     "project_name": "ci", "user_domain_name": "Default",
                     "project_domain_name": "Default"},
            "region_name": region, "identity_api_version": 3})}}
        path.write_text(yaml.safe_dump(data))
        return str(path)

    # Faults -------------------------------------------------------------

    def fail(self, route: str, status: int, message: str = "injected",
             times: int = 1, retry_after=None) -> None:
        """Answer the next ``times`` requests of ``route`` with a Nova
        style fault instead of handling them (see :class:`Faults`)."""
        self.faults.fail(route, status, _fault(status, message), times,
                         retry_after)

    def lose_answer(self, route: str, how: str = "drop",
                    times: int = 1) -> None:
        """Carry out the next ``times`` requests of ``route``, then lose
        their answers (see :meth:`Faults.lose_answer`)."""
        self.faults.lose_answer(route, how, times)

    # Population ---------------------------------------------------------

    def _next(self) -> int:
        return next(self._ids)

    def add_image(self, name, image_id=None, owner=PROJECT_ID,
                  status="active", **properties) -> str:
        image_id = image_id or str(uuid.uuid4())
        with self.lock:
            self.images[image_id] = dict(
                properties, id=image_id, name=name, status=status,
                owner=owner, visibility="private", disk_format="qcow2",
                container_format="bare", size=0, checksum=None,
                tags=[], min_disk=0, min_ram=0, protected=False,
                file="/v2/images/%s/file" % image_id,
                schema="/v2/schemas/image")
        return image_id

    def add_network(self, name, cidr, external=False, version=4) -> str:
        net_id = "net-" + name
        subnet_id = "subnet-" + name
        self.networks[net_id] = {
            "id": net_id, "name": name, "status": "ACTIVE",
            "router:external": external, "subnets": [subnet_id],
            "admin_state_up": True, "shared": False,
            "project_id": PROJECT_ID, "tenant_id": PROJECT_ID}
        self.subnets[subnet_id] = {
            "id": subnet_id, "name": name + "-subnet", "network_id": net_id,
            "cidr": cidr, "ip_version": version, "enable_dhcp": True,
            "project_id": PROJECT_ID, "tenant_id": PROJECT_ID}
        return net_id

    def add_port(self, network="private", status="DOWN", device_owner="",
                 device_id="") -> str:
        with self.lock:
            port = self._make_port(self.networks["net-" + network],
                                   device_id, device_owner)
            port["status"] = status
        return port["id"]

    def add_floating_ip(self, port_id=None) -> str:
        with self.lock:
            return self._make_fip("net-public", port_id)["id"]

    def _address(self, network) -> str:
        subnet = self.subnets[network["subnets"][0]]
        prefix = subnet["cidr"].split("/")[0]
        n = self._next()
        if subnet["ip_version"] == 6:
            return prefix.rstrip(":") + "::%x" % n
        return prefix.rsplit(".", 1)[0] + ".%d" % n

    def _make_port(self, network, device_id, device_owner) -> dict:
        port = {"id": str(uuid.uuid4()), "name": "",
                "network_id": network["id"], "device_id": device_id,
                "device_owner": device_owner, "status": "ACTIVE",
                "mac_address": "fa:16:3e:00:00:%02x" % (self._next() % 256),
                "fixed_ips": [{"subnet_id": network["subnets"][0],
                               "ip_address": self._address(network)}],
                "admin_state_up": True, "project_id": PROJECT_ID,
                "tenant_id": PROJECT_ID, "security_groups": []}
        self.ports[port["id"]] = port
        return port

    def _make_fip(self, network_id, port_id) -> dict:
        fip = {"id": str(uuid.uuid4()),
               "floating_network_id": network_id,
               "floating_ip_address": "203.0.113.%d" % (
                   100 + self._next() % 150),
               "port_id": None, "fixed_ip_address": None, "status": "DOWN",
               "router_id": None, "project_id": PROJECT_ID,
               "tenant_id": PROJECT_ID, "description": ""}
        self.floating_ips[fip["id"]] = fip
        if port_id:
            self._attach(fip, self.ports[port_id])
        return fip

    @staticmethod
    def _attach(fip, port) -> None:
        fip["port_id"] = port["id"]
        fip["fixed_ip_address"] = port["fixed_ips"][0]["ip_address"]
        fip["status"] = "ACTIVE"

    # Views --------------------------------------------------------------

    def live_servers(self) -> dict:
        """Servers not deleted, by id (a copy)."""
        with self.lock:
            return {sid: dict(s) for sid, s in self.servers.items()
                    if s["status"] != "DELETED"}

    def _usage(self) -> dict:
        used = {"instances": 0, "cores": 0, "ram": 0}
        for server in self.servers.values():
            if server["status"] == "DELETED":
                continue
            flavor = self.flavors[server["flavor"]["id"]]
            used["instances"] += 1
            used["cores"] += flavor["vcpus"]
            used["ram"] += flavor["ram"]
        return used

    def _tick(self, server) -> None:
        """Let a building server finish booting (unless paused)."""
        if server["status"] != "BUILD" or self.boot_paused:
            return
        if self.error_faults:
            server["status"] = "ERROR"
            server["fault"] = {"code": 500, "message": self.error_faults.pop(0),
                               "created": "2026-01-01T00:00:00Z"}
            return
        owner = "compute:" + (server["OS-EXT-AZ:availability_zone"] or "nova")
        for net_id in server["_networks"]:
            self._make_port(self.networks[net_id], server["id"], owner)
        server["status"] = "ACTIVE"

    def _addresses(self, server) -> dict:
        addresses: dict = {}
        for port in self.ports.values():
            if port["device_id"] != server["id"]:
                continue
            name = self.networks[port["network_id"]]["name"]
            entries = addresses.setdefault(name, [])
            for fixed in port["fixed_ips"]:
                version = 6 if ":" in fixed["ip_address"] else 4
                entries.append({"addr": fixed["ip_address"],
                                "version": version,
                                "OS-EXT-IPS:type": "fixed",
                                "OS-EXT-IPS-MAC:mac_addr":
                                    port["mac_address"]})
            for fip in self.floating_ips.values():
                if fip["port_id"] == port["id"]:
                    entries.append({"addr": fip["floating_ip_address"],
                                    "version": 4,
                                    "OS-EXT-IPS:type": "floating",
                                    "OS-EXT-IPS-MAC:mac_addr":
                                        port["mac_address"]})
        return addresses

    def _render(self, server) -> dict:
        self._tick(server)
        data = {k: v for k, v in server.items() if not k.startswith("_")}
        data["addresses"] = self._addresses(server)
        if server["status"] == "DELETED":
            server["_listings_left"] -= 1
            if server["_listings_left"] <= 0:
                del self.servers[server["id"]]
        return data

    # Compute ------------------------------------------------------------

    def create_server(self, body) -> tuple:
        spec = body["server"]
        self.create_bodies.append(spec)
        if self.create_errors:
            status, message = self.create_errors.pop(0)
            return status, _fault(status, message)
        flavor = self.flavors.get(spec.get("flavorRef"))
        if flavor is None:
            return 400, _fault(400, "Flavor %s could not be found." %
                               spec.get("flavorRef"))
        bdm = spec.get("block_device_mapping_v2") or []
        image_id = spec.get("imageRef") or next(
            (b.get("uuid") for b in bdm if b.get("source_type") == "image"),
            None)
        if image_id not in self.images:
            return 400, _fault(400, "Image %s could not be found." % image_id)
        networks = []
        for net in spec.get("networks") or [{"uuid": "net-private"}]:
            if net.get("uuid") not in self.networks:
                return 400, _fault(400, "Network %s could not be found." %
                                   net.get("uuid"))
            networks.append(net["uuid"])
        metadata = spec.get("metadata") or {}
        for key, value in metadata.items():
            if not isinstance(value, str) or len(value) > 255:
                return 400, _fault(400, "Invalid metadata value for %s" % key)
        az = spec.get("availability_zone")
        if az is not None and az not in self.azs:
            return 400, _fault(400, "The requested availability zone is "
                                    "not available")
        used = self._usage()
        needed = {"instances": 1, "cores": flavor["vcpus"],
                  "ram": flavor["ram"]}
        for name, amount in needed.items():
            limit = self.limits.get(name, -1)
            if limit >= 0 and used[name] + amount > limit:
                return 403, _fault(403, (
                    "Quota exceeded for %s: Requested %d, but already used "
                    "%d of %d %s" % (name, amount, used[name], limit, name)))
        server_id = str(uuid.uuid4())
        volumes = []
        if bdm and not spec.get("imageRef"):
            volumes.append({"id": str(uuid.uuid4()),
                            "delete_on_termination": bool(
                                bdm[0].get("delete_on_termination"))})
        self.servers[server_id] = {
            "id": server_id, "name": spec.get("name"), "status": "BUILD",
            "flavor": {"id": flavor["id"], "links": []},
            "image": "" if volumes else {"id": image_id, "links": []},
            "metadata": dict(metadata), "key_name": spec.get("key_name"),
            "OS-EXT-AZ:availability_zone": az or self.azs[0],
            "security_groups": [{"name": g.get("name")} for g in
                                spec.get("security_groups") or []],
            "config_drive": "True" if spec.get("config_drive") else "",
            "os-extended-volumes:volumes_attached": volumes,
            "hostId": "host-" + server_id[:8], "tenant_id": PROJECT_ID,
            "user_id": USER_ID, "accessIPv4": "", "accessIPv6": "",
            "created": "2026-01-01T00:00:00Z",
            "updated": "2026-01-01T00:00:00Z", "links": [],
            "OS-EXT-STS:task_state": None, "OS-EXT-STS:vm_state": "building",
            "_networks": networks, "_listings_left": 0,
            "_user_data": spec.get("user_data"),
        }
        return 202, {"server": {"id": server_id, "links": [],
                                "adminPass": "x"}}

    def delete_server(self, server_id) -> tuple:
        server = self.servers.get(server_id)
        if server is None or server["status"] == "DELETED":
            return 404, _not_found("Instance %s could not be found." %
                                   server_id)
        if self.delete_errors:
            status, message = self.delete_errors.pop(0)
            return status, _fault(status, message)
        for port_id in [p["id"] for p in self.ports.values()
                        if p["device_id"] == server_id]:
            self._delete_port(port_id)
        if self.deleted_listings > 0:
            server["status"] = "DELETED"
            server["_listings_left"] = self.deleted_listings
        else:
            del self.servers[server_id]
        return 204, None

    def _delete_port(self, port_id) -> None:
        del self.ports[port_id]
        for fip in self.floating_ips.values():
            if fip["port_id"] == port_id:
                fip.update(port_id=None, fixed_ip_address=None,
                           status="DOWN")

    def limits_body(self) -> dict:
        used = self._usage()
        return {"limits": {"rate": [], "absolute": {
            "maxTotalInstances": self.limits.get("instances", -1),
            "maxTotalCores": self.limits.get("cores", -1),
            "maxTotalRAMSize": self.limits.get("ram", -1),
            "maxServerMeta": 128, "maxImageMeta": 128,
            "maxPersonality": 5, "maxPersonalitySize": 10240,
            "maxTotalKeypairs": 100, "maxServerGroups": 10,
            "maxServerGroupMembers": 10, "maxSecurityGroups": 10,
            "maxSecurityGroupRules": 20, "maxTotalFloatingIps": 10,
            "totalInstancesUsed": used["instances"],
            "totalCoresUsed": used["cores"], "totalRAMUsed": used["ram"],
            "totalServerGroupsUsed": 0, "totalSecurityGroupsUsed": 0,
            "totalFloatingIpsUsed": 0}}}

    # Image --------------------------------------------------------------

    def create_image(self, body) -> tuple:
        self.image_bodies.append(body)
        props = dict(body)
        name = props.pop("name", None)
        image_id = self.add_image(name, status="queued", **props)
        return 201, self.images[image_id]

    def upload_image(self, image_id, data) -> tuple:
        image = self.images.get(image_id)
        if image is None:
            return 404, _not_found("No image found with ID %s" % image_id)
        image.update(status="active", size=len(data),
                     checksum=hashlib.md5(data).hexdigest())
        return 204, None


def _fault(status, message) -> dict:
    name = {400: "badRequest", 403: "forbidden", 409: "conflictingRequest",
            413: "overLimit", 429: "overLimit"}.get(status, "computeFault")
    return {name: {"code": status, "message": message}}


def _not_found(message) -> dict:
    return {"itemNotFound": {"code": 404, "message": message}}


IGNORED_QUERY = frozenset(("limit", "marker", "sort_key", "sort_dir",
                           "fields", "is_public", "all_tenants"))


def _filtered(records, query) -> list:
    """Records matching every query parameter naming one of their keys."""
    result = []
    for record in records:
        ok = True
        for key, values in query.items():
            if key in IGNORED_QUERY or key not in record:
                continue
            value = record[key]
            if isinstance(value, bool):
                values = [v.lower() for v in values]
                text = str(value).lower()
            else:
                text = "" if value is None else str(value)
            if text not in values:
                ok = False
        if ok:
            result.append(record)
    return result


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    cloud: FakeOpenStack = None

    def log_message(self, format, *args):  # noqa: A002 (stdlib name)
        pass

    def setup(self):
        super().setup()
        # Headers and body go out in two writes; without this, Nagle and
        # delayed ACKs add 40 ms to every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY,
                                   1)

    # Plumbing -----------------------------------------------------------

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status, body=None, headers=None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def _dispatch(self, method) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        path = parsed.path.rstrip("/")
        query = urllib.parse.parse_qs(parsed.query)
        raw = self._body()
        cloud = self.cloud
        for pattern, route_method, name, func in ROUTES:
            if route_method != method:
                continue
            match = re.fullmatch(pattern, path)
            if match is None:
                continue
            with cloud.lock:
                cloud.counts[name] += 1
            injected = cloud.faults.before(name)
            if injected is not None:
                self._send(*injected)
                return
            with cloud.lock:
                result = func(self, cloud, query, raw, *match.groups())
            how = cloud.faults.after(name)
            if how is not None:
                if lose(self, how, cloud.faults):
                    return
                result = 500, _fault(500, "injected: answer lost")
            self._send(*result)
            return
        with cloud.lock:
            cloud.unknown.append((method, self.path))
        self._send(404, _not_found("no route for %s %s" % (method, path)))

    # Keystone -----------------------------------------------------------

    def _base(self) -> str:
        return "http://%s:%d" % self.server.server_address[:2]

    def identity_versions(self, cloud, query, raw):
        return 300, {"versions": {"values": [self._v3()]}}

    def _v3(self) -> dict:
        return {"id": "v3.14", "status": "stable",
                "updated": "2020-01-01T00:00:00Z",
                "links": [{"rel": "self",
                           "href": self._base() + "/identity/v3/"}],
                "media-types": [{"base": "application/json",
                                 "type": "application/"
                                         "vnd.openstack.identity-v3+json"}]}

    def identity_v3(self, cloud, query, raw):
        return 200, {"version": self._v3()}

    def token(self, cloud, query, raw):
        base = self._base()

        def service(kind, name, url):
            return {"type": kind, "name": name, "id": name, "endpoints": [
                {"id": "%s-%s" % (name, iface), "interface": iface,
                 "region": "RegionOne", "region_id": "RegionOne",
                 "url": url} for iface in ("public", "internal", "admin")]}
        token = {
            "methods": ["password"], "expires_at": "2099-01-01T00:00:00Z",
            "issued_at": "2026-01-01T00:00:00Z",
            "user": {"id": USER_ID, "name": "nodepool",
                     "domain": {"id": "default", "name": "Default"}},
            "project": {"id": PROJECT_ID, "name": "ci",
                        "domain": {"id": "default", "name": "Default"}},
            "roles": [{"id": "r1", "name": "member"}],
            "catalog": [
                service("identity", "keystone", base + "/identity"),
                service("compute", "nova", base + "/compute/v2.1"),
                service("image", "glance", base + "/image"),
                service("network", "neutron", base + "/network"),
            ] + ([service("block-storage", "cinderv3",
                          base + "/volume/v3/" + PROJECT_ID)]
                 if cloud.volume_service else [])}
        return 201, {"token": token}, {"X-Subject-Token": uuid.uuid4().hex}

    # Nova ---------------------------------------------------------------

    def compute_version(self, cloud, query, raw):
        return 200, {"version": {
            "id": "v2.1", "status": "CURRENT", "version": "2.1",
            "min_version": "2.1", "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self",
                       "href": self._base() + "/compute/v2.1/"}]}}

    def servers_detail(self, cloud, query, raw):
        servers = [cloud._render(s) for s in list(cloud.servers.values())]
        return 200, {"servers": _filtered(servers, query)}

    def server_get(self, cloud, query, raw, server_id):
        server = cloud.servers.get(server_id)
        if server is None:
            return 404, _not_found("Instance %s could not be found." %
                                   server_id)
        return 200, {"server": cloud._render(server)}

    def server_create(self, cloud, query, raw):
        return cloud.create_server(json.loads(raw))

    def server_delete(self, cloud, query, raw, server_id):
        return cloud.delete_server(server_id)

    def server_action(self, cloud, query, raw, server_id):
        if server_id not in cloud.servers:
            return 404, _not_found("Instance %s could not be found." %
                                   server_id)
        if "os-getConsoleOutput" in json.loads(raw or b"{}"):
            return 200, {"output": cloud.console_output}
        return 400, _fault(400, "unsupported action")

    def flavors_detail(self, cloud, query, raw):
        return 200, {"flavors": list(cloud.flavors.values())}

    def flavor_get(self, cloud, query, raw, flavor_id):
        flavor = cloud.flavors.get(flavor_id)
        if flavor is None:
            return 404, _not_found("Flavor %s could not be found." %
                                   flavor_id)
        return 200, {"flavor": flavor}

    def limits(self, cloud, query, raw):
        return 200, cloud.limits_body()

    def azs(self, cloud, query, raw):
        return 200, {"availabilityZoneInfo": [
            {"zoneName": name, "zoneState": {"available": True},
             "hosts": None} for name in cloud.azs]}

    # Cinder -------------------------------------------------------------

    def _volume_version(self) -> dict:
        return {"id": "v3.0", "status": "CURRENT", "version": "3.70",
                "min_version": "3.0", "updated": "2023-01-01T00:00:00Z",
                "links": [{"rel": "self",
                           "href": self._base() + "/volume/v3/"}]}

    def volume_versions(self, cloud, query, raw):
        return 300, {"versions": [self._volume_version()]}

    def volume_version(self, cloud, query, raw, project=None):
        return 200, {"version": self._volume_version()}

    def volume_limits(self, cloud, query, raw, project):
        return 200, {"limits": {"rate": [], "absolute": {
            "maxTotalVolumes": cloud.volume_limits["volumes"],
            "maxTotalVolumeGigabytes": cloud.volume_limits["gigabytes"],
            "maxTotalSnapshots": 10, "maxTotalBackups": 10,
            "maxTotalBackupGigabytes": 1000, "totalVolumesUsed": 0,
            "totalGigabytesUsed": 0, "totalSnapshotsUsed": 0,
            "totalBackupsUsed": 0, "totalBackupGigabytesUsed": 0}}}

    # Glance -------------------------------------------------------------

    def image_versions(self, cloud, query, raw):
        return 300, {"versions": [{
            "id": "v2.16", "status": "CURRENT",
            "links": [{"rel": "self", "href": self._base() + "/image/v2/"}]}]}

    def images_list(self, cloud, query, raw):
        return 200, {"images": _filtered(list(cloud.images.values()), query),
                     "first": "/v2/images", "schema": "/v2/schemas/images"}

    def image_get(self, cloud, query, raw, image_id):
        image = cloud.images.get(image_id)
        if image is None:
            return 404, _not_found("No image found with ID %s" % image_id)
        return 200, image

    def image_create(self, cloud, query, raw):
        return cloud.create_image(json.loads(raw))

    def image_upload(self, cloud, query, raw, image_id):
        return cloud.upload_image(image_id, raw)

    def image_delete(self, cloud, query, raw, image_id):
        if cloud.images.pop(image_id, None) is None:
            return 404, _not_found("No image found with ID %s" % image_id)
        return 204, None

    # Neutron ------------------------------------------------------------

    def network_versions(self, cloud, query, raw):
        return 200, {"versions": [{
            "id": "v2.0", "status": "CURRENT",
            "links": [{"rel": "self",
                       "href": self._base() + "/network/v2.0/"}]}]}

    def networks(self, cloud, query, raw):
        return 200, {"networks": _filtered(list(cloud.networks.values()),
                                           query)}

    def subnets(self, cloud, query, raw):
        return 200, {"subnets": _filtered(list(cloud.subnets.values()),
                                          query)}

    def ports(self, cloud, query, raw):
        return 200, {"ports": _filtered(list(cloud.ports.values()), query)}

    def port_delete(self, cloud, query, raw, port_id):
        if port_id not in cloud.ports:
            return 404, {"NeutronError": {"type": "PortNotFound",
                                          "message": "Port not found"}}
        cloud._delete_port(port_id)
        return 204, None

    def fips(self, cloud, query, raw):
        return 200, {"floatingips": _filtered(
            list(cloud.floating_ips.values()), query)}

    def fip_get(self, cloud, query, raw, fip_id):
        fip = cloud.floating_ips.get(fip_id)
        if fip is None:
            return 404, {"NeutronError": {"type": "FloatingIPNotFound",
                                          "message": "not found"}}
        return 200, {"floatingip": fip}

    def fip_create(self, cloud, query, raw):
        spec = json.loads(raw)["floatingip"]
        network = cloud.networks.get(spec.get("floating_network_id"))
        if network is None or not network["router:external"]:
            return 400, {"NeutronError": {"type": "BadRequest",
                                          "message": "bad network"}}
        port_id = spec.get("port_id")
        if port_id is not None and port_id not in cloud.ports:
            return 404, {"NeutronError": {"type": "PortNotFound",
                                          "message": "Port not found"}}
        return 201, {"floatingip": cloud._make_fip(network["id"], port_id)}

    def fip_delete(self, cloud, query, raw, fip_id):
        if cloud.floating_ips.pop(fip_id, None) is None:
            return 404, {"NeutronError": {"type": "FloatingIPNotFound",
                                          "message": "not found"}}
        return 204, None


_ID = r"([^/]+)"
_C = r"/compute/v2\.1"
_N = r"/network/v2\.0"
ROUTES = [(pattern, method, name, func) for pattern, method, name, func in (
    (r"/identity", "GET", "GET identity", _Handler.identity_versions),
    (r"/identity/v3", "GET", "GET identity/v3", _Handler.identity_v3),
    (r"/identity/v3/auth/tokens", "POST", "POST tokens", _Handler.token),
    (_C, "GET", "GET compute", _Handler.compute_version),
    (_C + r"/servers/detail", "GET", "GET servers/detail",
     _Handler.servers_detail),
    (_C + r"/servers", "POST", "POST servers", _Handler.server_create),
    (_C + r"/servers/" + _ID + "/action", "POST", "POST server action",
     _Handler.server_action),
    (_C + r"/servers/" + _ID, "GET", "GET server", _Handler.server_get),
    (_C + r"/servers/" + _ID, "DELETE", "DELETE server",
     _Handler.server_delete),
    (_C + r"/flavors/detail", "GET", "GET flavors/detail",
     _Handler.flavors_detail),
    (_C + r"/flavors/" + _ID, "GET", "GET flavor", _Handler.flavor_get),
    (_C + r"/limits", "GET", "GET limits", _Handler.limits),
    (_C + r"/os-availability-zone", "GET", "GET azs", _Handler.azs),
    (r"/volume", "GET", "GET volume", _Handler.volume_versions),
    (r"/volume/v3", "GET", "GET volume/v3", _Handler.volume_version),
    (r"/volume/v3/" + _ID, "GET", "GET volume/v3/project",
     _Handler.volume_version),
    (r"/volume/v3/" + _ID + "/limits", "GET", "GET volume limits",
     _Handler.volume_limits),
    (r"/image", "GET", "GET image", _Handler.image_versions),
    (r"/image/v2/images", "GET", "GET images", _Handler.images_list),
    (r"/image/v2/images", "POST", "POST images", _Handler.image_create),
    (r"/image/v2/images/" + _ID + "/file", "PUT", "PUT image file",
     _Handler.image_upload),
    (r"/image/v2/images/" + _ID, "GET", "GET image/id", _Handler.image_get),
    (r"/image/v2/images/" + _ID, "DELETE", "DELETE image",
     _Handler.image_delete),
    (r"/network", "GET", "GET network", _Handler.network_versions),
    (_N + r"/networks", "GET", "GET networks", _Handler.networks),
    (_N + r"/subnets", "GET", "GET subnets", _Handler.subnets),
    (_N + r"/ports", "GET", "GET ports", _Handler.ports),
    (_N + r"/ports/" + _ID, "DELETE", "DELETE port", _Handler.port_delete),
    (_N + r"/floatingips", "GET", "GET floatingips", _Handler.fips),
    (_N + r"/floatingips", "POST", "POST floatingips", _Handler.fip_create),
    (_N + r"/floatingips/" + _ID, "GET", "GET floatingip", _Handler.fip_get),
    (_N + r"/floatingips/" + _ID, "DELETE", "DELETE floatingip",
     _Handler.fip_delete),
)]
