# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Image upload and delete hooks of the AWS adapter against moto, with
the import-task calls moto lacks faked (tests.fakes.aws.ImportingEc2)."""

import logging

import pytest

from nodepool.config.loader import load_config
from nodepool.driver.aws import errors
from nodepool.driver.aws.adapter import AwsAdapter
from tests.fakes.aws import REGION, CallRecorder, moto_clients

moto = pytest.importorskip("moto")

CONFIG = """
labels: []
diskimages:
  - name: snap
  - name: whole
  - name: direct
providers:
  - name: ec2
    driver: aws
    region-name: us-west-2
    image-import-timeout: 60
    object-storage:
      bucket-name: np-images
    pools: []
    diskimages:
      - name: snap
        username: ubuntu
        imds-support: v2.0
        volume-type: gp3
        volume-size: 20
        throughput: 300
        tags:
          team: ci
      - name: whole
        username: ubuntu
        import-method: image
      - name: direct
        username: ubuntu
        import-method: ebs-direct
        ena-support: false
        architecture: arm64
"""

METADATA = {"nodepool_build_id": "b1", "nodepool_upload_id": "3",
            "nodepool_provider_name": "ec2"}


@pytest.fixture
def images(tmp_path, monkeypatch):
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"),
                       ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_DEFAULT_REGION", REGION)):
        monkeypatch.setenv(key, value)
    with moto.mock_aws():
        recorder = CallRecorder()
        clients = moto_clients(recorder)
        clients.s3.create_bucket(Bucket="np-images", CreateBucketConfiguration={
            "LocationConstraint": REGION})
        path = tmp_path / "nodepool.yaml"
        path.write_text(CONFIG)
        provider = load_config(str(path)).providers["ec2"]
        adapter = AwsAdapter(
            provider, clients=clients, warm=False, image_poll_interval=0.01,
            retrier=errors.make_retrier(logging.getLogger("t"),
                                        sleep=lambda s: None))
        adapter.recorder = recorder
        yield adapter
        adapter.stop()


def image_file(tmp_path, blocks):
    path = tmp_path / "image.raw"
    block = 512 * 1024
    with open(path, "wb") as f:
        for filled in blocks:
            f.write((b"\x01" if filled else b"\0") * block)
    return str(path)


def tags_of(resource):
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or ()}


def test_snapshot_import_registers_tagged_image(images, tmp_path):
    ec2 = images.clients.ec2
    ami = images.upload_image(
        images.provider.diskimages["snap"], "snap-123", image_file(
            tmp_path, [True]), "raw", METADATA, "md5", "sha")
    [image] = ec2.describe_images(ImageIds=[ami])["Images"]
    assert tags_of(image) == dict(METADATA, Name="snap-123", team="ci")
    [register] = images.recorder.args["RegisterImage"]
    assert register["ImdsSupport"] == "v2.0"
    assert register["EnaSupport"] is True
    assert register["VirtualizationType"] == "hvm"
    ebs = register["BlockDeviceMappings"][0]["Ebs"]
    assert (ebs["VolumeType"], ebs["VolumeSize"], ebs["Throughput"]) == (
        "gp3", 20, 300)
    snapshot_id = ebs["SnapshotId"]
    [snapshot] = ec2.describe_snapshots(
        SnapshotIds=[snapshot_id])["Snapshots"]
    assert tags_of(snapshot)["nodepool_upload_id"] == "3"
    # The import task carried the tags; the staging object is gone.
    [task_tags] = ec2.task_tags.values()
    assert {t["Key"]: t["Value"] for t in task_tags[0]["Tags"]}[
        "nodepool_build_id"] == "b1"
    container = next(iter(ec2.tasks.values()))["container"]
    assert container == {"Format": "raw", "UserBucket": {
        "S3Bucket": "np-images", "S3Key": "snap-123.raw"}}
    assert not images.clients.s3.list_objects_v2(
        Bucket="np-images").get("Contents")
    # Deleting removes the AMI and the snapshots it lists.  (moto's
    # RegisterImage makes a snapshot of its own instead of using ours;
    # ours, still tagged, is what leak cleanup would remove.)
    listed = [m["Ebs"]["SnapshotId"] for m in
              image["BlockDeviceMappings"]]
    images.delete_image(ami)
    assert not ec2.describe_images(ImageIds=[ami])["Images"]
    snapshots = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert not set(listed) & {s["SnapshotId"] for s in snapshots}
    leftover = [r for r in images.list_resources()
                if r.type == "snapshot" and r.id == snapshot_id]
    assert leftover[0].metadata["nodepool_upload_id"] == "3"


def test_too_many_imports_retried(images, tmp_path):
    ec2 = images.clients.ec2
    ec2.fail_next_imports = 2
    ami = images.upload_image(
        images.provider.diskimages["snap"], "snap-9", image_file(
            tmp_path, [True]), "vhd", METADATA, "md5", "sha")
    assert ami.startswith("ami-")
    assert ec2.import_calls == 3


def test_image_import_tags_ami_and_snapshot(images, tmp_path):
    ec2 = images.clients.ec2
    ami = images.upload_image(
        images.provider.diskimages["whole"], "whole-1", image_file(
            tmp_path, [True]), "vmdk", METADATA, "md5", "sha")
    [image] = ec2.describe_images(ImageIds=[ami])["Images"]
    assert tags_of(image)["nodepool_upload_id"] == "3"
    task = next(iter(ec2.tasks.values()))
    [snapshot] = ec2.describe_snapshots(
        SnapshotIds=[task["snapshot"]])["Snapshots"]
    assert tags_of(snapshot)["Name"] == "whole-1"


def test_ebs_direct_writes_only_data_blocks(images, tmp_path):
    ec2 = images.clients.ec2
    path = image_file(tmp_path, [True, False, True])
    with open(path, "ab") as f:
        f.write(b"\x02" * 1000)  # a short last block, zero padded
    ami = images.upload_image(
        images.provider.diskimages["direct"], "direct-1", path, "raw",
        METADATA, "md5", "sha")
    puts = images.recorder.args["PutSnapshotBlock"]
    assert [p["BlockIndex"] for p in puts] == [0, 2, 3]
    assert all(p["ChecksumAlgorithm"] == "SHA256" for p in puts)
    [complete] = images.recorder.args["CompleteSnapshot"]
    assert complete["ChangedBlocksCount"] == 3
    [register] = images.recorder.args["RegisterImage"]
    assert register["Architecture"] == "arm64"
    assert register["EnaSupport"] is False
    assert "ImdsSupport" not in register
    [image] = ec2.describe_images(ImageIds=[ami])["Images"]
    assert tags_of(image)["Name"] == "direct-1"


def test_staged_objects_listed_for_leak_cleanup(images, tmp_path):
    s3 = images.clients.s3
    s3.put_object(Bucket="np-images", Key="left-over.raw", Body=b"x",
                  Tagging="nodepool_build_id=b9&nodepool_upload_id=1&"
                          "nodepool_provider_name=ec2")
    objects = [r for r in images.list_resources() if r.type == "object"]
    assert [(r.id, r.metadata["nodepool_build_id"]) for r in objects] == [
        ("left-over.raw", "b9")]
    images.delete_resource(objects[0])
    assert not s3.list_objects_v2(Bucket="np-images").get("Contents")


def test_list_images_lists_own_amis_with_tags(images, tmp_path):
    ec2 = images.clients.ec2
    uploaded = images.upload_image(
        images.provider.diskimages["snap"], "snap-7", image_file(
            tmp_path, [True]), "raw", METADATA, "md5", "sha")
    untagged = ec2.register_image(Name="hand-made")["ImageId"]
    images.recorder.reset()
    listed = {image.id: image for image in images.list_images()}
    # Only the account's own AMIs, not the public stock ones.
    assert set(listed) == {uploaded, untagged}
    assert listed[uploaded].name == "snap-7"
    assert listed[uploaded].metadata == dict(METADATA, Name="snap-7",
                                             team="ci")
    assert (listed[untagged].name, listed[untagged].metadata) == (
        "hand-made", {})
    assert images.recorder.args["DescribeImages"] == [
        {"Owners": ["self"], "MaxResults": 1000}]


def test_list_images_follows_pages(images):
    ec2 = images.clients.ec2
    ids = sorted(ec2.register_image(Name="img-%d" % i)["ImageId"]
                 for i in range(5))
    calls = images.recorder.args["DescribeImages"]

    def two_per_page(parsed):
        # moto answers everything at once; cut it into pages of two.
        start = int(calls[-1].get("NextToken") or 0)
        everything = sorted(parsed["Images"], key=lambda i: i["ImageId"])
        parsed["Images"] = everything[start:start + 2]
        if start + 2 < len(everything):
            parsed["NextToken"] = str(start + 2)
    images.recorder.after_hooks["DescribeImages"] = two_per_page
    assert sorted(image.id for image in images.list_images()) == ids
    assert [call.get("NextToken") for call in calls] == [None, "2", "4"]
