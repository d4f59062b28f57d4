# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The records of the fake VPC API (tests/fakes/ibmvpc.py): how floating
IPs, instances and imported images are made, attached and deleted, the
API's validation errors, and what the cloud does on its own between
requests (:meth:`VpcRecords._reconcile`).

:class:`VpcRecords` is part of :class:`tests.fakes.ibmvpc.FakeIbmVpc`; it
uses the fake's ``items``, ``groups``, ``lock`` (held by the caller),
``_put``, ``_new_id`` and settings.
"""

import time
import uuid


class ApiError(Exception):
    """An error answer of the VPC API."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self):
        return {"errors": [{"code": self.code, "message": self.message,
                            "more_info": "https://cloud.ibm.com/docs"}],
                "trace": uuid.uuid4().hex}


class VpcRecords:
    """Making and changing VPC records (called with the fake's lock
    held)."""

    def _group_ref(self, body):
        ref = body.get("resource_group") or {}
        group = self.groups.get(ref.get("id"))
        if group is None:
            raise ApiError(400, "resource_group_not_found",
                           "Resource group %s not found" % ref.get("id"))
        return {"id": group["id"], "name": group["name"],
                "href": "%s/v2/resource_groups/%s" % (self.url, group["id"])}

    def _unique(self, collection, name):
        if not name:
            raise ApiError(400, "validation_required_field_missing",
                           "name is required")
        if any(r["name"] == name for r in self.items[collection].values()):
            raise ApiError(400, "validation_unique_failed",
                           "The name %s is already in use" % name)

    def _make_fip(self, body):
        self._unique("floating_ips", body.get("name"))
        group = self._group_ref(body)
        zone = (body.get("zone") or {}).get("name")
        if not zone:
            raise ApiError(400, "validation_required_field_missing",
                           "zone is required")
        number = next(self._ids)
        record = self._put("floating_ips", {
            "name": body["name"], "resource_group": group,
            "zone": {"name": zone}, "status": "pending",
            "address": "203.0.113.%d" % (number % 250 + 1),
            "_ready_at": time.monotonic() + self.fip_delay})
        return record

    def _import_image(self, body):
        self._unique("images", body.get("name"))
        group = self._group_ref(body)
        href = (body.get("file") or {}).get("href") or ""
        location, _, rest = href[len("cos://"):].partition("/")
        bucket, _, key = rest.partition("/")
        if not href.startswith("cos://") or self.cos is None or \
                location != "us-south" or not self.cos.has(bucket, key):
            raise ApiError(400, "image_file_not_found",
                           "Image file %s not found" % href)
        system = (body.get("operating_system") or {}).get("name")
        if not system:
            raise ApiError(400, "validation_required_field_missing",
                           "operating_system is required")
        return self._put("images", {
            "name": body["name"], "status": "pending", "owner_type": "user",
            "visibility": "private", "resource_group": group,
            "file": {"href": href}, "operating_system": {"name": system},
            "_ready_at": time.monotonic() + self.image_delay})

    def _lookup(self, collection, ref, what):
        if "id" in ref and ref["id"] in self.items[collection]:
            return self.items[collection][ref["id"]]
        for record in self.items[collection].values():
            if ref.get("href") and record["href"] == ref["href"]:
                return record
            if ref.get("name") and record["name"] == ref["name"]:
                return record
        raise ApiError(404, "%s_not_found" % what,
                       "%s %s not found" % (what, ref))

    def _make_instance(self, body):
        self._unique("instances", body.get("name"))
        group = self._group_ref(body)
        profile = self.items["instance/profiles"].get(
            (body.get("profile") or {}).get("name"))
        if profile is None:
            raise ApiError(400, "instance_profile_not_found",
                           "Instance profile %s not found" % (
                               body.get("profile")))
        image = self._lookup("images", body.get("image") or {}, "image")
        if image["status"] != "available":
            raise ApiError(400, "image_not_available",
                           "Image %s is %s" % (image["id"], image["status"]))
        nic = body.get("primary_network_interface") or {}
        subnet = self._lookup("subnets", nic.get("subnet") or {}, "subnet")
        zone = (body.get("zone") or {}).get("name")
        if subnet["zone"]["name"] != zone:
            raise ApiError(400, "subnet_zone_mismatch",
                           "Subnet %s is not in zone %s" % (
                               subnet["name"], zone))
        for key in body.get("keys") or ():
            self._lookup("keys", key, "key")
        live = [r for r in self.items["instances"].values()
                if r["status"] != "deleting"]
        if self.max_instances is not None and \
                len(live) >= self.max_instances:
            raise ApiError(400, "over_quota",
                           "Exceeded the instance quota of %d for the "
                           "account" % self.max_instances)
        number = next(self._ids)
        nic_record = {
            "id": self._new_id("0717"), "name": nic.get("name") or "eth0",
            "subnet": {"id": subnet["id"], "name": subnet["name"]},
            "primary_ip": {"address": "10.240.0.%d" % (number % 250 + 2)},
            "primary_ipv4_address": "10.240.0.%d" % (number % 250 + 2),
            "floating_ips": []}
        outcome = self._fail_next.pop(0) if self._fail_next else None
        record = self._put("instances", {
            "name": body["name"], "status": "pending", "status_reasons": [],
            "profile": {"name": profile["name"]},
            "vcpu": {"count": profile["vcpu_count"]["value"]},
            "memory": profile["memory"]["value"],
            "zone": {"name": zone}, "resource_group": group,
            "vpc": {"id": subnet["vpc"]["id"], "name": subnet["vpc"]["name"]},
            "image": {"id": image["id"], "name": image["name"]},
            "primary_network_interface": nic_record,
            "network_interfaces": [nic_record],
            "boot_volume_attachment": {"volume": {"name": (
                (body.get("boot_volume_attachment") or {}).get("volume")
                or {}).get("name")}},
            "user_data": body.get("user_data"),
            "keys": body.get("keys") or [],
            "_outcome": outcome,
            "_ready_at": time.monotonic() + self.start_delay})
        return record

    def _attach(self, vm, nic, fip):
        instance = self.items["instances"].get(vm)
        if instance is None:
            raise ApiError(404, "instance_not_found", "Instance %s" % vm)
        interface = instance["primary_network_interface"]
        if interface["id"] != nic:
            raise ApiError(404, "network_interface_not_found",
                           "Network interface %s" % nic)
        record = self.items["floating_ips"].get(fip)
        if record is None:
            raise ApiError(404, "floating_ip_not_found", "Floating IP %s"
                           % fip)
        if record["status"] != "available" or record.get("target"):
            raise ApiError(409, "floating_ip_in_use",
                           "Floating IP %s is %s" % (fip, record["status"]))
        record["target"] = {"id": nic, "name": interface["name"],
                            "resource_type": "network_interface",
                            "primary_ip": interface["primary_ip"]}
        interface["floating_ips"] = [{"id": fip, "address": record[
            "address"], "name": record["name"]}]
        return record

    def _delete(self, collection, record):
        if collection == "instances":
            record["status"] = "deleting"
            record["_gone_at"] = time.monotonic() + self.delete_delay
            for fip in self.items["floating_ips"].values():
                target = fip.get("target") or {}
                if target.get("id") == record[
                        "primary_network_interface"]["id"]:
                    fip.pop("target")
            return
        if collection == "floating_ips" and record.get("target"):
            # Releasing a bound floating IP unbinds it.
            for vm in self.items["instances"].values():
                nic = vm["primary_network_interface"]
                nic["floating_ips"] = [f for f in nic["floating_ips"]
                                       if f["id"] != record["id"]]
        del self.items[collection][record["id"]]

    def _reconcile(self):
        now = time.monotonic()
        for fip in self.items["floating_ips"].values():
            if fip["status"] == "pending" and now >= fip["_ready_at"]:
                fip["status"] = "available"
        for image in self.items["images"].values():
            if image["status"] == "pending" and now >= image["_ready_at"]:
                image["status"] = "available"
        instances = self.items["instances"]
        for key, vm in list(instances.items()):
            if vm["status"] == "deleting":
                if now >= vm["_gone_at"]:
                    del instances[key]
                continue
            if vm["status"] not in ("pending", "starting"):
                continue
            if self.hold_instances:
                vm["status"] = "starting"
            elif now >= vm["_ready_at"]:
                if vm["_outcome"]:
                    vm["status"] = "failed"
                    vm["status_reasons"] = [{
                        "code": vm["_outcome"],
                        "message": "The instance could not start: %s"
                                   % vm["_outcome"]}]
                else:
                    vm["status"] = "running"
            elif now >= vm["_ready_at"] - self.start_delay / 2:
                vm["status"] = "starting"
