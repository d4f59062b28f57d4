# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The Azure driver in the launcher: the launcher in-process with an azure
provider on the loopback fake ARM (tests/fakes/azure.py; real credential
and SDK clients over HTTPS), a real ZooKeeper and a Zuul-like client.

What every driver does (launch, delete, retry, quota, leaked VMs) is in
the contract suite, tests/contract; here only what is Azure's own."""

import json

import pytest

from tests.fixtures.waits import wait_for
from tests.functional.conftest import read_nodes

CONFIG = """
labels:
  - name: small
providers:
  - name: azure
    driver: azure
    location: centralus
    resource-group: nodepool
    resource-group-location: centralus
    auth-path: {auth_path}
    network: np-net
    rate: 200
    launch-retries: {retries}
    tags:
      owner: ci
    cloud-images:
      - name: ubuntu
        username: zuul
        key: ssh-rsa AAAAkey
        image-reference:
          sku: 22_04-lts
          publisher: Canonical
          version: latest
          offer: ubuntu
    pools:
      - name: main
        max-servers: {max_servers}
        host-key-checking: false
        labels:
          - name: small
            cloud-image: ubuntu
            hardware-profile:
              vm-size: Standard_B1ls
            tags:
              team: label
"""


@pytest.fixture
def launcher_factory(azure_fake, launcher_factory):
    """Launchers whose factory depends on the fake ARM, so that it is set
    up before and torn down after every launcher of the test (against a
    stopped fake, the launchers' teardown waits in azure-core retries)."""
    return launcher_factory


@pytest.fixture
def fake(azure_fake):
    """The fake ARM with its virtual network ``np-net``."""
    return azure_fake


@pytest.fixture
def start(fake, launcher_factory, tmp_path):
    auth_path = tmp_path / "azure.json"
    auth_path.write_text(json.dumps(fake.auth_data()))

    def start(**params):
        return launcher_factory(CONFIG, auth_path=auth_path, **params)
    return start


def test_leaked_resources_cleaned_up(start, fake, zuul):
    tags = {"nodepool_provider_name": "azure", "nodepool_node_id": "0999"}
    fake.add_resource("networkInterfaces", "np0999-nic", tags=tags)
    fake.add_resource("publicIPAddresses", "np0999-pip-v4", tags=tags)
    fake.add_resource("publicIPAddresses", "not-ours")
    start()
    wait_for(lambda: fake.names("networkInterfaces") == [] and
             fake.names("publicIPAddresses") == ["not-ours"], timeout=30)
    assert not read_nodes(zuul.kazoo)
