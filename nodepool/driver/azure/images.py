# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Image upload, delete and listing for the builder.

A disk image becomes a managed image of the provider's resource group
(named after the upload, which is also its external id) in three steps:

* an empty managed disk is created for upload (``createOption: Upload``,
  exactly the file's size, which must be a fixed VHD: a multiple of 512
  bytes);
* write access to it yields a SAS URL, and the file goes to that page
  blob in 4 MiB page writes (plain HTTPS PUTs, so no storage SDK);
  all-zero chunks are skipped, since a new blob reads as zeros.  Access
  is revoked afterwards, whatever happened;
* a generalized Linux image is made from the disk, and the disk is
  deleted (a disk that would not go keeps its tags, so leak cleanup
  takes it later).

Every ARM call goes through the adapter's rate limiter.  The steps are
polled every ``poll_interval`` seconds, each for at most
``upload_timeout``; all of it blocks, as it runs in a builder thread.
"""

import os
import time

from nodepool import exceptions
from nodepool.driver.azure.statemachines import (
    as_dict, id_name, provisioning_state)
from nodepool.driver.statemachine.adapter import CloudImage

# Page blob writes: at most 4 MiB each, retried a few times.
PAGE_CHUNK = 4 * 1024 * 1024
PAGE_TRIES = 3
UPLOAD_TIMEOUT = 3600.0


class ImageManager:
    """Uploads, deletes and lists images for one :class:`AzureAdapter`."""

    def __init__(self, adapter, poll_interval: float = 5.0,
                 upload_timeout: float = UPLOAD_TIMEOUT):
        self.adapter = adapter
        self.log = adapter.log
        self.resource_group = adapter.resource_group
        self.location = adapter.location
        self.poll_interval = poll_interval
        self.upload_timeout = upload_timeout

    @property
    def provider(self):
        return self.adapter.provider

    @property
    def compute(self):
        return self.adapter.compute

    # Upload -------------------------------------------------------------

    def upload(self, provider_image, image_name: str, filename: str,
               metadata: dict) -> str:
        """Upload a VHD as managed image ``image_name`` (its external id)."""
        call = self.adapter.call
        tags = {}
        tags.update(self.provider.tags)
        tags.update(provider_image.tags)
        tags.update(metadata or {})
        tags = {str(k): str(v) for k, v in tags.items()}
        size = os.path.getsize(filename)
        if not size or size % 512:
            raise exceptions.ImageCreateException(
                "%s is %d bytes, not a fixed VHD (a multiple of 512)"
                % (filename, size))
        disks = self.compute.disks
        self.log.info("Uploading %s (%d bytes) as image %s", filename, size,
                      image_name)
        self.adapter.ensure_group(self.log)
        call("Create upload disk %s" % image_name,
             disks.begin_create_or_update, self.resource_group,
             image_name, {
                 "location": self.location, "tags": tags,
                 "sku": {"name": "Standard_LRS"},
                 "properties": {
                     "osType": "Linux", "hyperVGeneration": "V2",
                     "creationData": {"createOption": "Upload",
                                      "uploadSizeBytes": size}}},
             polling=False).result()
        try:
            disk = self._wait_provisioned(disks, image_name)
            access = call(
                "Grant write access to disk %s" % image_name,
                disks.begin_grant_access, self.resource_group, image_name,
                {"access": "Write", "durationInSeconds": 24 * 3600},
                polling_interval=self.poll_interval)
            sas = as_dict(access.result(timeout=self.upload_timeout))[
                "accessSAS"]
            try:
                written = self._put_pages(sas, filename, size)
            finally:
                call("Revoke access to disk %s" % image_name,
                     disks.begin_revoke_access, self.resource_group,
                     image_name, polling_interval=self.poll_interval
                     ).result(timeout=self.upload_timeout)
            self.log.info("Wrote %d bytes of %s to disk %s", written,
                          filename, image_name)
            call("Create image %s" % image_name,
                 self.compute.images.begin_create_or_update,
                 self.resource_group, image_name, {
                     "location": self.location, "tags": tags,
                     "properties": {
                         "hyperVGeneration": "V2",
                         "storageProfile": {
                             "osDisk": {
                                 "osType": "Linux",
                                 "osState": "Generalized",
                                 "managedDisk": {"id": disk["id"]},
                                 "caching": "ReadWrite"},
                             "zoneResilient": True}}},
                 polling=False).result()
            self._wait_provisioned(self.compute.images, image_name)
        finally:
            try:
                self.adapter.delete_one("disks", image_name)
            except Exception:
                # Tagged with the upload: leak cleanup takes it later.
                self.log.exception("Deleting upload disk %s failed",
                                   image_name)
        return image_name

    def _wait_provisioned(self, operations, name: str) -> dict:
        """GET a resource until it is Succeeded."""
        deadline = time.monotonic() + self.upload_timeout
        while True:
            record = as_dict(self.adapter.call(
                "Get %s" % name, operations.get, self.resource_group, name))
            state = provisioning_state(record)
            if state == "Succeeded":
                return record
            if state == "Failed":
                raise exceptions.ImageCreateException(
                    "%s failed to provision" % name)
            if time.monotonic() > deadline:
                raise exceptions.ImageCreateException(
                    "Timeout waiting for %s" % name)
            time.sleep(self.poll_interval)

    def _put_pages(self, sas: str, filename: str, size: int) -> int:
        """Write the file to a page blob in 4 MiB page writes, skipping
        all-zero chunks (a new blob reads as zeros)."""
        import requests
        written = 0
        session = requests.Session()
        separator = "&" if "?" in sas else "?"
        url = sas + separator + "comp=page"
        with open(filename, "rb") as f:
            offset = 0
            while offset < size:
                chunk = f.read(PAGE_CHUNK)
                if not chunk:
                    break
                if chunk.count(0) != len(chunk):
                    self._put_page(session, url, offset, chunk)
                    written += len(chunk)
                offset += len(chunk)
        session.close()
        return written

    def _put_page(self, session, url: str, offset: int, chunk: bytes) -> None:
        headers = {"x-ms-page-write": "update", "x-ms-version": "2021-08-06",
                   "x-ms-blob-type": "PageBlob",
                   "x-ms-range": "bytes=%d-%d" % (offset,
                                                  offset + len(chunk) - 1)}
        for attempt in range(1, PAGE_TRIES + 1):
            try:
                response = session.put(url, data=chunk, headers=headers,
                                       timeout=120)
                if response.status_code == 201:
                    return
                error = "HTTP %d %s" % (response.status_code,
                                        response.text[:200])
                if response.status_code < 500 and \
                        response.status_code != 429:
                    break
            except Exception as e:
                error = str(e)
            if attempt < PAGE_TRIES:
                time.sleep(self.poll_interval * attempt)
        raise exceptions.ImageCreateException(
            "Writing bytes %d-%d failed: %s" % (
                offset, offset + len(chunk) - 1, error))

    # Delete and list ----------------------------------------------------

    def delete(self, external_id: str) -> None:
        """Delete a managed image by name or resource id (gone is fine)."""
        self.adapter.delete_one("images", id_name(external_id))

    def list_images(self) -> list:
        """Every managed image of the resource group."""
        return [CloudImage(record["name"], record["name"],
                           record.get("tags") or {})
                for record in self.adapter.list_all(
                    "images", self.compute.images.list_by_resource_group,
                    self.resource_group)]
