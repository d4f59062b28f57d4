# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Image upload and delete for the builder, and S3 staging objects.

Three ways to turn a disk image file into an AMI (``import-method``):

* ``snapshot``: stage the file in S3, ``ImportSnapshot``, then
  ``RegisterImage`` on the snapshot.  Works for every format and lets us
  choose the AMI's settings (ENA, IMDSv2, volume type).
* ``image``: stage in S3 and ``ImportImage``; AWS makes the AMI and
  inspects the OS (slower, fewer settings).
* ``ebs-direct``: write a raw image block by block with the EBS direct
  API into a new snapshot, then ``RegisterImage``; no S3 bucket needed.

Import tasks are slow (minutes), so they are polled every
``poll_interval`` seconds.  AWS allows only a few concurrent import
tasks per account; ``ResourceCountLimitExceeded`` is retried until the
provider's ``image-import-timeout``.
"""

import base64
import hashlib
import math
import threading
import time
import urllib.parse
from typing import Optional

from nodepool import exceptions
from nodepool.driver.aws import errors
from nodepool.driver.statemachine.adapter import Resource

EBS_BLOCK = 512 * 1024
GIB = 1024 ** 3
ROOT_DEVICE = "/dev/sda1"


class ImageManager:
    """Uploads and deletes images for one :class:`AwsAdapter`."""

    def __init__(self, adapter, poll_interval: float = 30.0):
        self.adapter = adapter
        self.log = adapter.log
        self.poll_interval = poll_interval
        self._stop = threading.Event()

    @property
    def provider(self):
        return self.adapter.provider

    @property
    def bucket(self) -> Optional[str]:
        storage = self.provider.object_storage
        return storage.bucket_name if storage else None

    def _wait(self) -> None:
        # An Event rather than sleep: stop() ends a long poll at once.
        if self._stop.wait(self.poll_interval):
            raise exceptions.ImageCreateException("Image upload stopped")

    def _deadline(self) -> float:
        timeout = self.provider.image_import_timeout
        return time.monotonic() + timeout if timeout else float("inf")

    # Upload -------------------------------------------------------------

    def upload(self, provider_image, image_name: str, filename: str,
               image_format: str, metadata: dict) -> str:
        """Import ``filename`` and return the AMI id."""
        tags = dict(provider_image.tags)
        tags.update(metadata)
        tags["Name"] = image_name
        method = provider_image.import_method
        self.log.info("Uploading image %s (%s) with %s", image_name,
                      image_format, method)
        if method == "ebs-direct":
            snapshot_id = self._ebs_direct(filename, tags)
            return self._register(provider_image, image_name, snapshot_id,
                                  tags)
        key = self._stage(image_name, filename, image_format, tags)
        try:
            if method == "image":
                return self._import_image(provider_image, key, image_format,
                                          tags)
            snapshot_id = self._import_snapshot(key, image_format, tags)
        finally:
            self.delete_object(key)
        return self._register(provider_image, image_name, snapshot_id, tags)

    def _stage(self, image_name, filename, image_format, tags) -> str:
        if not self.bucket:
            raise exceptions.ImageCreateException(
                "object-storage is needed to import images into %s"
                % self.provider.name)
        key = "%s.%s" % (image_name, image_format)
        # Tagged so a crash mid-import leaves an object leak cleanup finds.
        self.adapter.clients.s3.upload_file(
            filename, self.bucket, key,
            ExtraArgs={"Tagging": urllib.parse.urlencode(tags)})
        return key

    def _retry_limit(self, what: str, func, **kwargs):
        """A mutating call, retried while AWS has too many imports."""
        deadline = self._deadline()
        while True:
            try:
                return self.adapter.mutate(what, func, **kwargs)
            except Exception as e:
                if errors.error_code(e) != "ResourceCountLimitExceeded" or \
                        time.monotonic() > deadline:
                    raise
                self.log.info("%s: too many imports, waiting", what)
                self._wait()

    @staticmethod
    def _tag_list(tags: dict) -> list:
        return [{"Key": k, "Value": str(v)} for k, v in tags.items()]

    def _import_snapshot(self, key, image_format, tags) -> str:
        ec2 = self.adapter.ec2
        task = self._retry_limit(
            "ImportSnapshot %s" % key, ec2.import_snapshot,
            DiskContainer={"Format": image_format,
                           "UserBucket": {"S3Bucket": self.bucket,
                                          "S3Key": key}},
            TagSpecifications=[{"ResourceType": "import-snapshot-task",
                                "Tags": self._tag_list(tags)}])
        task_id = task["ImportTaskId"]
        while True:
            found = self.adapter.read(
                "DescribeImportSnapshotTasks",
                ec2.describe_import_snapshot_tasks,
                ImportTaskIds=[task_id])["ImportSnapshotTasks"]
            detail = found[0]["SnapshotTaskDetail"] if found else {}
            status = detail.get("Status")
            if status == "completed":
                snapshot_id = detail["SnapshotId"]
                break
            if status in ("deleted", "deleting", None):
                raise exceptions.ImageCreateException(
                    "Import task %s failed: %s" % (
                        task_id, detail.get("StatusMessage")))
            self._wait()
        self.adapter.mutate("CreateTags %s" % snapshot_id, ec2.create_tags,
                            Resources=[snapshot_id],
                            Tags=self._tag_list(tags))
        return snapshot_id

    def _import_image(self, provider_image, key, image_format, tags) -> str:
        ec2 = self.adapter.ec2
        task = self._retry_limit(
            "ImportImage %s" % key, ec2.import_image,
            Architecture=provider_image.architecture,
            DiskContainers=[{"Format": image_format,
                             "UserBucket": {"S3Bucket": self.bucket,
                                            "S3Key": key}}],
            TagSpecifications=[{"ResourceType": "import-image-task",
                                "Tags": self._tag_list(tags)}])
        task_id = task["ImportTaskId"]
        while True:
            found = self.adapter.read(
                "DescribeImportImageTasks", ec2.describe_import_image_tasks,
                ImportTaskIds=[task_id])["ImportImageTasks"]
            task = found[0] if found else {}
            status = task.get("Status")
            if status == "completed":
                break
            if status in ("deleted", "deleting", None):
                raise exceptions.ImageCreateException(
                    "Import task %s failed: %s" % (
                        task_id, task.get("StatusMessage")))
            self._wait()
        image_id = task["ImageId"]
        resources = [image_id] + [d["SnapshotId"] for d in
                                  task.get("SnapshotDetails") or ()
                                  if d.get("SnapshotId")]
        self.adapter.mutate("CreateTags %s" % image_id, ec2.create_tags,
                            Resources=resources, Tags=self._tag_list(tags))
        return image_id

    def _ebs_direct(self, filename: str, tags: dict) -> str:
        ebs = self.adapter.clients.ebs
        with open(filename, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(0)
            volume_gib = max(1, math.ceil(size / GIB))
            snapshot = self.adapter.mutate(
                "StartSnapshot", ebs.start_snapshot, VolumeSize=volume_gib,
                Tags=self._tag_list(tags))
            snapshot_id = snapshot["SnapshotId"]
            changed = 0
            index = 0
            while True:
                block = f.read(EBS_BLOCK)
                if not block:
                    break
                if len(block) < EBS_BLOCK:
                    block += b"\0" * (EBS_BLOCK - len(block))
                # Untouched blocks of a new snapshot read as zeros: sparse
                # images upload only their data.
                if block.count(0) != EBS_BLOCK:
                    checksum = base64.b64encode(
                        hashlib.sha256(block).digest()).decode()
                    self.adapter.retrier.call(
                        "PutSnapshotBlock", ebs.put_snapshot_block,
                        SnapshotId=snapshot_id, BlockIndex=index,
                        BlockData=block, DataLength=EBS_BLOCK,
                        Checksum=checksum, ChecksumAlgorithm="SHA256")
                    changed += 1
                index += 1
        self.adapter.mutate("CompleteSnapshot", ebs.complete_snapshot,
                            SnapshotId=snapshot_id,
                            ChangedBlocksCount=changed)
        deadline = self._deadline()
        while True:
            found = self.adapter.read(
                "DescribeSnapshots", self.adapter.ec2.describe_snapshots,
                SnapshotIds=[snapshot_id])["Snapshots"]
            state = found[0].get("State") if found else None
            if state == "completed":
                return snapshot_id
            if state == "error" or time.monotonic() > deadline:
                raise exceptions.ImageCreateException(
                    "Snapshot %s did not complete (%s)" % (snapshot_id,
                                                           state))
            self._wait()

    def _register(self, provider_image, image_name, snapshot_id,
                  tags) -> str:
        ec2 = self.adapter.ec2
        ebs = {"DeleteOnTermination": True, "SnapshotId": snapshot_id,
               "VolumeType": provider_image.volume_type}
        for key, value in (("VolumeSize", provider_image.volume_size),
                           ("Iops", provider_image.iops),
                           ("Throughput", provider_image.throughput)):
            if value is not None:
                ebs[key] = value
        args = dict(
            Name=image_name, Architecture=provider_image.architecture,
            RootDeviceName=ROOT_DEVICE, VirtualizationType="hvm",
            EnaSupport=provider_image.ena_support,
            BlockDeviceMappings=[{"DeviceName": ROOT_DEVICE, "Ebs": ebs}])
        if provider_image.imds_support:
            args["ImdsSupport"] = provider_image.imds_support
        image = self.adapter.mutate("RegisterImage %s" % image_name,
                                    ec2.register_image, **args)
        # Tagged in a second call rather than with TagSpecifications,
        # which some EC2 implementations (moto) ignore for images; the
        # tags are what leak cleanup goes by.
        self.adapter.mutate("CreateTags %s" % image["ImageId"],
                            ec2.create_tags, Resources=[image["ImageId"]],
                            Tags=self._tag_list(tags))
        self.log.info("Registered image %s as %s", image_name,
                      image["ImageId"])
        return image["ImageId"]

    # Delete -------------------------------------------------------------

    def delete(self, external_id: str) -> None:
        """Deregister an AMI and delete its snapshots."""
        ec2 = self.adapter.ec2
        try:
            found = self.adapter.read("DescribeImages", ec2.describe_images,
                                      ImageIds=[external_id])["Images"]
        except Exception as e:
            if errors.classify(e) is errors.ErrorClass.NOT_FOUND:
                found = []
            else:
                raise
        snapshots = [m["Ebs"]["SnapshotId"] for image in found
                     for m in image.get("BlockDeviceMappings") or ()
                     if m.get("Ebs", {}).get("SnapshotId")]
        if found:
            self.adapter.mutate("DeregisterImage %s" % external_id,
                                ec2.deregister_image, ImageId=external_id)
        for snapshot_id in snapshots:
            try:
                self.adapter.mutate("DeleteSnapshot %s" % snapshot_id,
                                    ec2.delete_snapshot,
                                    SnapshotId=snapshot_id)
            except Exception as e:
                if errors.classify(e) is not errors.ErrorClass.NOT_FOUND:
                    raise
        self.log.info("Deleted image %s and snapshots %s", external_id,
                      snapshots)

    # Staging objects ----------------------------------------------------

    def list_objects(self) -> list:
        """Staged objects in the bucket, as leak-checkable resources."""
        if not self.bucket or self.adapter.clients.s3 is None:
            return []
        s3 = self.adapter.clients.s3
        resources = []
        token = None
        while True:
            args = {"Bucket": self.bucket}
            if token:
                args["ContinuationToken"] = token
            response = s3.list_objects_v2(**args)
            for obj in response.get("Contents") or ():
                tagging = s3.get_object_tagging(Bucket=self.bucket,
                                                Key=obj["Key"])
                tags = {t["Key"]: t["Value"]
                        for t in tagging.get("TagSet") or ()}
                resources.append(Resource(tags, "object", obj["Key"]))
            if not response.get("IsTruncated"):
                return resources
            token = response.get("NextContinuationToken")

    def delete_object(self, key: str) -> None:
        if self.bucket and self.adapter.clients.s3 is not None:
            self.adapter.clients.s3.delete_object(Bucket=self.bucket,
                                                  Key=key)

    def stop(self) -> None:
        self._stop.set()
