# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The fake Azure itself, driven by the stock SDK with its pollers: the
long-running operation protocol, ARM's reference checks and errors, so
that the adapter tests rest on a fake that behaves like ARM."""

import json

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from nodepool.driver.azure.adapter import AzureClients


@pytest.fixture
def fake(azure_fake):
    """The fake with its virtual network ``np-net``."""
    return azure_fake


@pytest.fixture
def clients(fake, tmp_path):
    path = tmp_path / "auth.json"
    path.write_text(json.dumps(fake.auth_data()))
    clients = AzureClients.from_auth_file(str(path), retry_total=0,
                                          polling_interval=0.01)
    yield clients
    clients.close()


def nic_body(fake, pip=None):
    props = {"subnet": {"id": fake.get("virtualNetworks", "np-net")["id"]
                        + "/subnets/default"}}
    if pip:
        props["publicIPAddress"] = {"id": pip}
    return {"location": "centralus",
            "properties": {"ipConfigurations": [
                {"name": "c", "properties": props}]}}


def test_long_running_operations(fake, clients):
    network = clients.network
    fake.hold("publicIPAddresses")
    poller = network.public_ip_addresses.begin_create_or_update(
        "nodepool", "ip", {"location": "centralus", "properties": {}})
    assert poller.status() == "InProgress"
    fake.release()
    pip = poller.result(timeout=10)
    assert pip.properties.ip_address.startswith("20.")
    nic = network.network_interfaces.begin_create_or_update(
        "nodepool", "nic", nic_body(fake, pip.id)).result(timeout=10)
    assert nic.properties.ip_configurations[0].properties \
        .private_ip_address.startswith("10.0.")
    # In use by the NIC: ARM refuses to delete the IP.
    with pytest.raises(HttpResponseError, match="still allocated"):
        network.public_ip_addresses.begin_delete("nodepool", "ip")
    network.network_interfaces.begin_delete("nodepool", "nic").result(
        timeout=10)
    network.public_ip_addresses.begin_delete("nodepool", "ip").result(
        timeout=10)
    with pytest.raises(ResourceNotFoundError):
        network.public_ip_addresses.get("nodepool", "ip")
    assert fake.counts["GET operation"] >= 3


def test_failed_provisioning_fails_the_poller(fake, clients):
    fake.fail_provisioning("publicIPAddresses", "InternalError", "boom")
    poller = clients.network.public_ip_addresses.begin_create_or_update(
        "nodepool", "ip", {"location": "centralus", "properties": {}})
    with pytest.raises(HttpResponseError, match="boom|Failed"):
        poller.result(timeout=10)


def test_requests_are_checked(fake, clients):
    with pytest.raises(HttpResponseError, match="ipConfigurations|member"):
        clients.network.network_interfaces.begin_create_or_update(
            "nodepool", "nic", {"location": "centralus", "properties": {
                "ip_configurations": []}})
    with pytest.raises(HttpResponseError, match="InvalidResourceReference"):
        clients.network.network_interfaces.begin_create_or_update(
            "nodepool", "nic", nic_body(fake, "/subscriptions/x/"
                                        "resourceGroups/nodepool/providers/"
                                        "Microsoft.Network/publicIPAddresses/"
                                        "nothere"))
