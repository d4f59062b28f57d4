# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The builder's decisions that need no ZooKeeper: what to build, in which
formats, what to keep, how uploads are named and tagged."""

import textwrap

import pytest

from nodepool.builder.build_worker import needs_build
from nodepool.builder.cleanup import keep_set
from nodepool.builder.common import (
    AdapterPool, file_stamp, image_providers, image_types,
    provider_image_type)
from nodepool.builder.upload_worker import external_name, upload_metadata
from nodepool.config.loader import load_config
from nodepool.zk.models import BuildState, ImageBuild
from tests.fakes import test_driver

CONFIG = """
labels: []
diskimages:
  - name: base
    abstract: true
    elements: [base]
    metadata: {owner: base}
  - name: ubuntu
    parent: base
    elements: [ubuntu]
    formats: [tar]
    metadata: {owner: infra, team: a}
  - name: debian
  - name: unused
providers:
  - name: raw-cloud
    driver: test
    diskimages:
      - name: ubuntu
        meta: {team: b}
      - name: debian
    pools: []
  - name: vhd-cloud
    driver: test
    image-format: vhd
    image-name-format: "{image_name}-{upload_id}-{timestamp}"
    diskimages:
      - name: ubuntu
    pools: []
  - name: no-images
    driver: test
    pools: []
  - name: static
    driver: static
    pools: []
  - name: aws-cloud
    driver: aws
    region-name: us-east-1
    pools: []
"""


@pytest.fixture
def config(tmp_path):
    test_driver.register()
    path = tmp_path / "nodepool.yaml"
    path.write_text(textwrap.dedent(CONFIG))
    yield load_config(str(path))
    test_driver.unregister()


def build(state=BuildState.READY, state_time=1000.0, formats=("qcow2",),
          id="b"):
    record = ImageBuild(image_name="ubuntu", id=id)
    record.state = state
    record.state_time = state_time
    record.formats = list(formats)
    return record


def test_image_providers(config):
    assert [p.name for p in image_providers(config)] == [
        "raw-cloud", "vhd-cloud", "no-images", "aws-cloud"]
    assert provider_image_type(config.providers["raw-cloud"]) == "raw"
    assert provider_image_type(config.providers["vhd-cloud"]) == "vhd"
    assert provider_image_type(config.providers["aws-cloud"]) == "raw"


def test_image_types(config):
    assert image_types(config, "ubuntu") == ["raw", "tar", "vhd"]
    assert image_types(config, "debian") == ["raw"]
    assert image_types(config, "unused") == []
    assert image_types(config, "missing") == []


def test_needs_build():
    types = ["qcow2"]
    assert needs_build(None, types, 3600, 5000.0)
    assert not needs_build(build(), types, 3600, 1000.0 + 3599)
    assert needs_build(build(), types, 3600, 1000.0 + 3600)
    assert needs_build(build(), ["qcow2", "raw"], 3600, 1001.0)
    assert not needs_build(build(formats=("qcow2", "raw")), types, 3600,
                           1001.0)


def test_keep_set():
    builds = [build(id="old", state_time=1.0),
              build(id="new", state_time=3.0),
              build(id="mid", state_time=2.0),
              build(id="newest-failed", state=BuildState.FAILED,
                    state_time=9.0),
              build(id="building", state=BuildState.BUILDING,
                    state_time=9.0)]
    assert keep_set(builds, configured=True) == {"new", "mid"}
    assert keep_set(builds, configured=False) == set()
    assert keep_set([], configured=True) == set()


def test_external_name(config):
    assert external_name(config.providers["raw-cloud"], "ubuntu",
                         "0000000001", 1234) == "ubuntu-1234"
    assert external_name(config.providers["vhd-cloud"], "ubuntu",
                         "0000000001", 1234) == "ubuntu-0000000001-1234"
    # AWS has no image-name-format: the default name.
    assert external_name(config.providers["aws-cloud"], "x", "1", 5) == "x-5"


def test_upload_metadata(config):
    provider = config.providers["raw-cloud"]
    meta = upload_metadata(config.diskimages["ubuntu"],
                           provider.diskimages["ubuntu"], "b1",
                           "0000000002", "raw-cloud")
    # Metadata is not inherited from the parent; provider values win.
    assert meta == {"owner": "infra", "team": "b",
                    "nodepool_build_id": "b1",
                    "nodepool_upload_id": "0000000002",
                    "nodepool_provider_name": "raw-cloud"}


def test_adapter_pool_reuses_and_replaces(config):
    made = []

    class Adapter:
        def __init__(self, provider):
            self.provider = provider
            self.stopped = False
            made.append(self)

        def stop(self):
            self.stopped = True

    class Driver:
        def get_adapter(self, provider, warm=True):
            assert not warm  # uploads need no background warm-up
            return Adapter(provider)

    pool = AdapterPool(lambda name: Driver())
    provider = config.providers["raw-cloud"]
    first = pool.get(provider)
    assert pool.get(provider) is first
    changed = provider.replace(image_format="qcow2")
    second = pool.get(changed)
    assert second is not first and not first.stopped
    pool.close()
    assert first.stopped and second.stopped


def test_file_stamp(tmp_path):
    path = tmp_path / "f"
    assert file_stamp(str(path), None) == (-1, None)
    path.write_text("x")
    assert file_stamp(str(path))[0] > 0
