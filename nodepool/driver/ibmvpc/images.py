# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""IBM VPC image upload, delete and listing for the builder.

An image file goes to the provider's Cloud Object Storage bucket first
(``object-storage``), through IBM's S3 SDK (``ibm-cos-sdk``) with the
provider's IAM API key; the VPC API then imports it from
``cos://<region>/<bucket>/<object>`` into the resource group
``npimages_<provider>``.  Once the image is available the object is
deleted.

Images and objects carry no tags either: an upload is named
``npimage<build id>-<upload id>`` (the object adds ``.<format>``), so
that leak cleanup can match it to its upload record.  (nodepool 11 names
them ``npimage<upload id>``, which the leak check, keyed on build and
upload id, can never match; such names are left alone here.)
"""

import logging
import re
import threading
import time
from typing import Optional

from nodepool import exceptions
from nodepool.driver.statemachine.adapter import CloudImage, Resource

UPLOAD_TIMEOUT = 3600.0
_IMAGE_NAME = re.compile(r"^npimage(\d+)-(\d+)(\.[A-Za-z0-9]+)?$")
_IMAGES_GROUP = re.compile(r"^npimages_([A-Za-z0-9-]+)$")
COS_SERVICE = "cloud-object-storage"


def images_group(provider: str) -> str:
    return "npimages_%s" % provider


def image_metadata(name: str, group_name: Optional[str]) -> dict:
    """nodepool's metadata of an image or object, from its name and (for
    images) its resource group; empty when not nodepool's."""
    found = _IMAGE_NAME.match(name or "")
    group = _IMAGES_GROUP.match(group_name or "")
    if found is None or group is None:
        return {}
    return {"nodepool_build_id": found.group(1),
            "nodepool_upload_id": found.group(2),
            "nodepool_provider_name": group.group(1)}


class ImageManager:
    """Uploads, deletes and lists one provider's images (the adapter's
    ``call``, ``list_all`` and clients do the API work).

    :param poll_interval: seconds between looks at an importing image.
    """

    def __init__(self, adapter, poll_interval: float = 30.0,
                 upload_timeout: float = UPLOAD_TIMEOUT):
        self.adapter = adapter
        self.provider = adapter.provider
        self.log = logging.getLogger("nodepool.driver.ibmvpc.%s.images"
                                     % self.provider.name)
        self.poll_interval = poll_interval
        self.upload_timeout = upload_timeout
        self._lock = threading.Lock()
        self._s3 = None
        self._group_id: Optional[str] = None

    # Object storage -------------------------------------------------------

    @property
    def storage(self):
        return self.provider.object_storage

    def s3(self):
        """The S3 client of the provider's object storage (made once)."""
        if self.storage is None:
            raise exceptions.ImageCreateException(
                "Provider %s has no object-storage for image uploads"
                % self.provider.name)
        with self._lock:
            if self._s3 is None:
                self._s3 = self._make_s3()
            return self._s3

    def _make_s3(self):
        # Imported here: only the builder uploads.
        import ibm_boto3
        from ibm_botocore.client import Config

        clients = self.adapter.clients
        manager = getattr(clients.authenticator, "token_manager", None)
        api_key = getattr(manager, "apikey", None)
        if not api_key:
            raise exceptions.ImageCreateException(
                "Image uploads of %s need IAM API key credentials"
                % self.provider.name)
        found = self.adapter.call(
            "Find object storage %s" % self.storage.instance_name,
            clients.resource_controller.list_resource_instances,
            name=self.storage.instance_name, type="service_instance")
        crns = [r["crn"] for r in found.get("resources") or ()
                if r["crn"].split(":")[4] == COS_SERVICE]
        if not crns:
            raise exceptions.ImageCreateException(
                "No Cloud Object Storage instance %s" %
                self.storage.instance_name)
        return ibm_boto3.client(
            "s3", ibm_api_key_id=api_key, ibm_service_instance_id=crns[0],
            ibm_auth_endpoint=manager.url + manager.OPERATION_PATH,
            config=Config(signature_version="oauth"),
            endpoint_url=self.storage.endpoint)

    def _s3_call(self, what, func, **kwargs):
        with self.adapter.limiter.limited(self.log.debug, what):
            return func(**kwargs)

    def list_objects(self, prefix: str = "") -> list:
        """Keys of the bucket's objects under ``prefix``; each page is one
        rate-limited call."""
        s3 = self.s3()
        keys, marker = [], ""
        while True:
            page = self._s3_call(
                "List objects %s" % prefix, s3.list_objects,
                Bucket=self.storage.bucket_name, Prefix=prefix,
                Marker=marker)
            found = [o["Key"] for o in page.get("Contents") or ()]
            keys.extend(found)
            if not page.get("IsTruncated") or not found:
                return keys
            marker = page.get("NextMarker") or found[-1]

    def delete_object(self, key: str) -> None:
        self._s3_call("Delete object %s" % key, self.s3().delete_object,
                      Bucket=self.storage.bucket_name, Key=key)

    # Upload and delete ----------------------------------------------------

    def images_group_id(self) -> str:
        """The id of ``npimages_<provider>``, created when missing."""
        if self._group_id is None:
            name = images_group(self.provider.name)
            manager = self.adapter.clients.resource_manager
            groups = {g["name"]: g["id"] for g in self.adapter.call(
                "List resource groups", manager.list_resource_groups).get(
                    "resources") or ()}
            if name not in groups:
                groups[name] = self.adapter.call(
                    "Create resource group %s" % name,
                    manager.create_resource_group, name=name)["id"]
            self._group_id = groups[name]
            self.adapter.remember_group(name, self._group_id)
        return self._group_id

    def upload(self, provider_image, filename: str, image_format: str,
               metadata: dict) -> str:
        name = "npimage%s-%s" % (metadata["nodepool_build_id"],
                                 metadata["nodepool_upload_id"])
        key = "%s.%s" % (name, image_format)
        bucket = self.storage.bucket_name if self.storage else None
        s3 = self.s3()
        location = self._s3_call("Bucket location", s3.get_bucket_location,
                                 Bucket=bucket)["LocationConstraint"]
        # A location names the storage class too (us-south-standard).
        region = location.rsplit("-", 1)[0]
        self.log.info("Uploading %s to %s/%s", filename, bucket, key)
        with open(filename, "rb") as f, self.adapter.limiter.limited(
                self.log.debug, "Upload object %s" % key):
            s3.upload_fileobj(f, bucket, key)
        image = self.adapter.call("Create image %s" % name,
                                  self.adapter.vpc.create_image, {
                                      "name": name,
                                      "resource_group": {
                                          "id": self.images_group_id()},
                                      "file": {"href": "cos://%s/%s/%s" % (
                                          region, bucket, key)},
                                      "operating_system": {
                                          "name":
                                          provider_image.operating_system},
                                  })
        try:
            self._wait_available(image["id"], name)
        finally:
            self.delete_object(key)
        return image["id"]

    def _wait_available(self, image_id: str, name: str) -> None:
        deadline = time.monotonic() + self.upload_timeout
        while True:
            image = self.adapter.call("Get image %s" % name,
                                      self.adapter.vpc.get_image, image_id)
            status = image.get("status")
            if status == "available":
                return
            if status != "pending":
                raise exceptions.ImageCreateException(
                    "Image %s is %s" % (name, status))
            if time.monotonic() > deadline:
                raise exceptions.ImageCreateException(
                    "Timeout waiting for image %s" % name)
            time.sleep(self.poll_interval)

    def delete(self, image_id: str) -> None:
        from nodepool.driver.ibmvpc import errors
        try:
            image = self.adapter.call("Get image %s" % image_id,
                                      self.adapter.vpc.get_image, image_id)
        except Exception as e:
            if errors.classify(e) is errors.ErrorClass.NOT_FOUND:
                return
            raise
        if self.storage is not None:
            for key in self.list_objects(prefix=image["name"]):
                self.delete_object(key)
        self.adapter.call("Delete image %s" % image["name"],
                          self.adapter.vpc.delete_image, image_id)

    # Listing --------------------------------------------------------------

    def user_images(self) -> list:
        return [i for i in self.adapter.list_all(
            "images", self.adapter.vpc.list_images)
            if i.get("owner_type") == "user"]

    def list_images(self) -> list:
        return [CloudImage(i["id"], i.get("name"), image_metadata(
            i.get("name"), self.adapter.group_name(i)))
            for i in self.user_images() if i.get("status") != "deleting"]

    def resources(self) -> list:
        """Images and objects that are nodepool's, as leak candidates."""
        found = []
        for image in self.list_images():
            if image.metadata:
                found.append(Resource(image.metadata, "image", image.id))
        if self.storage is not None:
            group = images_group(self.provider.name)
            for key in self.list_objects(prefix="npimage"):
                metadata = image_metadata(key, group)
                if metadata:
                    found.append(Resource(metadata, "object", key))
        return found

    def delete_resource(self, resource) -> None:
        if resource.type == "object":
            self.delete_object(resource.id)
        else:
            self.delete(resource.id)
