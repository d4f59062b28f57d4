# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The IBM VPC driver in the launcher: the launcher in-process with an
ibmvpc provider on the loopback fake IBM Cloud (tests/fakes/ibmvpc.py;
the real ibm-vpc and ibm-platform-services clients over HTTP, IAM tokens
included), a real ZooKeeper and a Zuul-like client.

What every driver does is in the contract suite, tests/contract; here
what is IBM's own: pools with and without floating IPs, image lookups,
ownership by names and resource groups, failed starts, quota refusals,
and a diskimage uploaded by the builder through object storage."""

import textwrap

import pytest

from nodepool.builder.server import NodePoolBuilder
from nodepool.zk.images import ImageStore
from nodepool.zk.models import RequestState, UploadState
from tests.fakes.fake_dib import DIB_CMD
from tests.fixtures.waits import wait_for
from tests.functional.conftest import read_nodes, served_by

CONFIG = """
labels:
  - name: private
  - name: public
  - name: filtered
providers:
  - name: ibmvpc
    driver: ibmvpc
    vpc: np-vpc
    region: us-south
    zone: us-south-1
    subnet: sn-nodepool
    credentials-file: {credentials}
    rate: 200
    launch-retries: {retries}
    launch-timeout: {launch_timeout}
    quota:
      cores: 200
    cloud-images:
      - name: debian
        username: debian
        image-name: ibm-debian-12
        keys: [np-key]
      - name: ubuntu
        username: ubuntu
        image-filter:
          operating-system:
            family: Ubuntu Linux
            version: "22.04 LTS Jammy Jellyfish"
    pools:
      - name: private
        max-servers: {max_servers}
        host-key-checking: false
        labels:
          - name: private
            profile: cx2-2x4
            cloud-image: debian
            user-data: "#cloud-config"
          - name: filtered
            profile: bx2-4x16
            cloud-image: ubuntu
      - name: public
        max-servers: {max_servers}
        public-ipv4: true
        host-key-checking: false
        labels:
          - name: public
            profile: cx2-2x4
            cloud-image: debian
"""


@pytest.fixture
def launcher_factory(ibmvpc_fake, launcher_factory):
    """Launchers set up after (and stopped before) the fake."""
    return launcher_factory


@pytest.fixture
def fake(ibmvpc_fake):
    return ibmvpc_fake


@pytest.fixture
def start(fake, launcher_factory):
    def start(**params):
        return launcher_factory(CONFIG, credentials=fake.credentials,
                                **params)
    return start


def _ready_node(zuul, label):
    _, nodes = served_by(zuul, zuul.submit([label]), timeout=60)
    return nodes[0]


def _return(zuul, node, fake):
    zuul.finish([node])
    wait_for(lambda: node.id not in {n.id for n in read_nodes(zuul.kazoo)}
             and fake.by_name("instances", node.external_id) is None,
             timeout=30)


def test_private_pool_has_no_floating_ip(start, fake, zuul):
    start()
    node = _ready_node(zuul, "private")
    assert node.external_id == "np" + node.id
    assert node.provider == "ibmvpc" and node.pool == "private"
    assert node.cloud == "IBM" and node.region == "us-south"
    assert node.az == "us-south-1"
    assert node.public_ipv4 is None
    assert node.private_ipv4.startswith("10.240.0.")
    assert node.interface_ip == node.private_ipv4
    assert node.username == "debian" and node.python_path == "auto"
    assert node.host_keys == []
    # IBM reports GB; nodepool's ram is MiB.
    assert node.resources == {"cores": 2, "instances": 1, "ram": 4096}
    vm = fake.by_name("instances", node.external_id)
    assert vm["resource_group"]["name"] == "np_ibmvpc_private"
    assert vm["image"]["name"] == "ibm-debian-12"
    assert vm["user_data"] == "#cloud-config"
    assert vm["boot_volume_attachment"]["volume"]["name"] == \
        node.external_id
    assert [k["id"] for k in vm["keys"]] == [
        fake.by_name("keys", "np-key")["id"]]
    assert fake.names("floating_ips") == []
    _return(zuul, node, fake)


def test_public_pool_gets_attached_floating_ip(start, fake, zuul):
    start()
    node = _ready_node(zuul, "public")
    fip = fake.by_name("floating_ips", node.external_id)
    vm = fake.by_name("instances", node.external_id)
    assert fip["status"] == "available"
    assert fip["target"]["id"] == vm["primary_network_interface"]["id"]
    assert fip["resource_group"]["name"] == "np_ibmvpc_public"
    assert node.public_ipv4 == fip["address"]
    assert node.interface_ip == node.public_ipv4
    assert node.private_ipv4 == vm["primary_network_interface"][
        "primary_ip"]["address"]
    _return(zuul, node, fake)
    # The floating IP goes with the node.
    assert fake.names("floating_ips") == []


def test_image_filter_resolves(start, fake, zuul):
    start()
    node = _ready_node(zuul, "filtered")
    vm = fake.by_name("instances", node.external_id)
    assert vm["image"]["name"] == "ibm-ubuntu-22-04"
    assert vm["profile"]["name"] == "bx2-4x16"
    assert node.resources == {"cores": 4, "instances": 1, "ram": 16384}
    _return(zuul, node, fake)


def test_leaked_instance_and_fip_cleaned_up(start, fake, zuul):
    leaked = fake.plant_instance("np0999", "np_ibmvpc_private")
    fake.plant_floating_ip("np0998", "np_ibmvpc_public")
    # Not nodepool's: another provider's group, a name outside the scheme.
    fake.plant_instance("np0997", "np_other_main")
    fake.plant_instance("web-1", "np_ibmvpc_private")
    fake.plant_floating_ip("np0996", "Default")
    start()
    wait_for(lambda: fake.names("instances") == ["np0997", "web-1"] and
             fake.names("floating_ips") == ["np0996"], timeout=30)
    assert leaked["name"] not in fake.names("instances")
    assert not read_nodes(zuul.kazoo)


def test_failed_start_leaves_nothing_behind(start, fake, zuul):
    fake.fail_instances(2, code="cannot_start_compute")
    start(retries=2)
    request = zuul.submit(["public"])
    done = zuul.wait_for_request(request, timeout=60)
    assert done.state == RequestState.FAILED
    assert fake.counts["POST instances"] == 2
    wait_for(lambda: fake.names("instances") == [] and
             fake.names("floating_ips") == [] and
             not read_nodes(zuul.kazoo), timeout=30)


def test_failed_start_is_retried(start, fake, zuul):
    fake.fail_instances(1)
    start(retries=3)
    node = _ready_node(zuul, "public")
    assert fake.counts["POST instances"] == 2
    assert fake.names("instances") == [node.external_id]
    assert fake.names("floating_ips") == [node.external_id]
    _return(zuul, node, fake)


def test_quota_refusal_leaves_nothing_behind(start, fake, zuul):
    # The API's own quota answer (the provider quota allows the node):
    # the attempt is aborted and its floating IP deleted; once the
    # account has room again the request is served.
    fake.max_instances = 0
    start()
    request = zuul.submit(["public"])
    wait_for(lambda: fake.counts["POST instances"] >= 1, timeout=30)
    fake.max_instances = None
    _, nodes = served_by(zuul, request, timeout=60)
    node = nodes[0]
    assert fake.counts["POST floating_ips"] >= 2
    wait_for(lambda: fake.names("floating_ips") == [node.external_id],
             timeout=30)
    assert fake.names("instances") == [node.external_id]
    _return(zuul, node, fake)


DISKIMAGE_CONFIG = """
images-dir: {images_dir}
build-log-dir: {log_dir}
labels:
  - name: custom
diskimages:
  - name: custom-image
    dib-cmd: {dib_cmd}
    elements: [debian, vm]
    username: zuul
providers:
  - name: ibmvpc
    driver: ibmvpc
    vpc: np-vpc
    region: us-south
    zone: us-south-1
    subnet: sn-nodepool
    credentials-file: {credentials}
    rate: 200
    object-storage:
      instance-name: np-cos
      endpoint: {cos_endpoint}
      bucket-name: np-images
    diskimages:
      - name: custom-image
        operating-system: debian-12-amd64
    pools:
      - name: main
        max-servers: 2
        host-key-checking: false
        labels:
          - name: custom
            profile: cx2-2x4
            diskimage: custom-image
"""


def test_diskimage_uploaded_and_booted(fake, launcher_factory, zk_factory,
                                       zuul, tmp_path):
    # Imported at once: the builder polls an importing image every 30 s.
    fake.image_delay = 0
    text = textwrap.dedent(DISKIMAGE_CONFIG).format(
        images_dir=tmp_path / "images", log_dir=tmp_path / "logs",
        dib_cmd=DIB_CMD, credentials=fake.credentials,
        cos_endpoint=fake.cos.url)
    path = tmp_path / "builder.yaml"
    path.write_text(text)
    builder = NodePoolBuilder(
        str(path), zk_client=zk_factory(), num_builders=1, num_uploaders=1,
        build_interval=0.05, upload_interval=0.05, cleanup_interval=0.2,
        dib_poll=0.02, upload_join_timeout=10)
    builder.start()
    try:
        store = ImageStore(zk_factory())

        def ready_upload():
            for build in store.get_builds("custom-image"):
                for upload in store.get_uploads(
                        "custom-image", build.id, "ibmvpc",
                        [UploadState.READY]):
                    return upload
        upload = wait_for(ready_upload, timeout=60)
        image = fake.by_name("images", "npimage%s-%s" % (
            upload.build_id, upload.id))
        assert image["id"] == upload.external_id
        assert image["resource_group"]["name"] == "npimages_ibmvpc"
        assert image["operating_system"]["name"] == "debian-12-amd64"
        assert image["file"]["href"].startswith("cos://us-south/np-images/")
        # The object is only needed for the import.
        assert fake.cos.keys() == []
        launcher_factory(text.replace("{", "{{").replace("}", "}}"))
        node = _ready_node(zuul, "custom")
        assert node.username == "zuul" and node.shell_type is None
        vm = fake.by_name("instances", node.external_id)
        assert vm["image"]["id"] == upload.external_id
        assert vm["keys"] == []
        _return(zuul, node, fake)
    finally:
        builder.stop()
        builder.join()


def test_throttled_and_failing_calls_are_survived(start, fake, zuul):
    # Two 429s on the instance create are retried by the adapter; a 500
    # on the floating IP create fails the attempt, which is retried.
    throttled = {"errors": [{"code": "too_many_requests",
                             "message": "Rate limit exceeded"}]}
    fake.faults.fail("POST instances", 429, throttled, times=2,
                     retry_after=0)
    fake.faults.fail("POST floating_ips", 500, {"errors": [{
        "code": "internal_error", "message": "try again"}]})
    start()
    node = _ready_node(zuul, "public")
    assert fake.counts["POST instances"] == 3
    assert fake.counts["POST floating_ips"] == 2
    assert fake.names("instances") == [node.external_id]
    assert fake.names("floating_ips") == [node.external_id]
    _return(zuul, node, fake)


def test_node_that_never_runs_leaves_nothing_behind(start, fake, zuul):
    fake.hold_instances = True
    start(retries=1, launch_timeout=2)
    done = zuul.wait_for_request(zuul.submit(["public"]), timeout=60)
    assert done.state == RequestState.FAILED
    assert fake.counts["POST instances"] == 1
    wait_for(lambda: fake.names("instances") == [] and
             fake.names("floating_ips") == [] and
             not read_nodes(zuul.kazoo), timeout=30)
