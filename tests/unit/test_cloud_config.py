# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The shared cloud config layer and the base-class answers.

Every cloud driver declares the shared provider keys through
``cloud.provider_keys``; the defaults that differ per driver are its
parameters.  Code asks pools and labels of any driver the same questions
(``quota_limits()``, ``checks_host_keys``...); drivers without the key get
the base class's answer.
"""

import textwrap

import pytest

from nodepool.config import ConfigValidationError, load_config
from nodepool.driver import cloud
from nodepool.driver.aws.config import AwsProviderConfig
from nodepool.driver.azure.config import AzureProviderConfig
from nodepool.driver.openstack.config import OpenStackProviderConfig
from tests.configs import corpus

MINIMAL = {
    "openstack": """
        - name: p
          driver: openstack
          cloud: mycloud
          pools: []
    """,
    "aws": """
        - name: p
          driver: aws
          region-name: us-east-1
          pools: []
    """,
    "azure": """
        - name: p
          driver: azure
          location: westeurope
          resource-group: nodepool
          resource-group-location: westeurope
          auth-path: /etc/nodepool/azure.json
          pools: []
    """,
}


def load_text(tmp_path, text):
    path = tmp_path / "nodepool.yaml"
    path.write_text(textwrap.dedent(text))
    return load_config(str(path), env={})


def minimal_provider(tmp_path, driver):
    providers = textwrap.indent(textwrap.dedent(MINIMAL[driver]), "  ")
    return load_text(tmp_path, "providers:\n" + providers).providers["p"]


def load(name):
    scenario = corpus.read_scenario(corpus.valid_path(name))
    return load_config(scenario.path, scenario.secure, env=scenario.env)


# (boot-timeout, rate) defaults; the rest is the same for every driver.
DRIVER_DEFAULTS = {
    "openstack": (OpenStackProviderConfig, 60, 1.0),
    "aws": (AwsProviderConfig, 180, 2.0),
    "azure": (AzureProviderConfig, 120, 1.0),
}


@pytest.mark.parametrize("driver", sorted(DRIVER_DEFAULTS))
def test_shared_provider_keys_and_their_defaults(tmp_path, driver):
    cls, boot_timeout, rate = DRIVER_DEFAULTS[driver]
    provider = minimal_provider(tmp_path, driver)
    assert isinstance(provider, cls)
    assert isinstance(provider, cloud.CloudProviderConfig)
    assert (provider.boot_timeout, provider.launch_timeout,
            provider.launch_retries, provider.rate) == (
                boot_timeout, 3600, 3, rate)
    assert (provider.post_upload_hook,
            provider.post_upload_hook_timeout) == (None, 3600)
    assert provider.cloud_images == {} and provider.diskimages == {}
    assert not provider.manage_images


def test_shared_keys_are_validated_alike(tmp_path):
    # The same validator for every driver: a hook timeout must be >= 1.
    for driver in ("openstack", "aws", "azure"):
        text = "providers:\n" + textwrap.indent(
            textwrap.dedent(MINIMAL[driver]), "  ") + \
            "    post-upload-hook-timeout: 0\n"
        with pytest.raises(ConfigValidationError) as info:
            load_text(tmp_path, text)
        assert "post-upload-hook-timeout" in str(info.value)


def test_base_answers_for_a_driver_without_the_keys():
    provider = load("static").providers["static-rack"]
    pool = next(iter(provider.pools.values()))
    label = next(iter(pool.labels.values()))
    assert pool.quota_limits() == {"instances": pool.max_servers}
    assert pool.checks_provider_quota
    assert pool.zone_choices == ()
    assert not pool.prefers_private_ip
    assert pool.checks_host_keys
    assert label.diskimage_name is None and label.cloud_image_name is None
    assert label.checks_host_keys is None
    assert not label.wants_console_log
    assert provider.label_image(label) is None
    assert not provider.manage_images
    assert (provider.node_cloud, provider.node_region) == (None, None)


def test_openstack_answers():
    provider = load("openstack").providers["cloud1"]
    pool = provider.pools["main"]
    assert pool.zone_choices == ("az1", "az2")
    assert not pool.checks_provider_quota    # ignore-provider-quota: true
    assert not pool.checks_host_keys
    assert pool.quota_limits() == {
        "instances": 100, "cores": 400, "ram": 819200, "volumes": 20,
        "volume-gb": 2000}
    label = pool.labels["ubuntu-jammy"]
    assert label.diskimage_name == "ubuntu-jammy"
    assert provider.label_image(label) is provider.diskimages["ubuntu-jammy"]
    assert (provider.node_cloud, provider.node_region) == (
        provider.cloud, provider.region_name)
    assert provider.manage_images
    image = provider.diskimages["ubuntu-jammy"]
    assert image.upload_metadata == image.meta


def test_aws_answers():
    provider = load("aws").providers["ec2-us-west-2"]
    pool = provider.pools["main"]
    assert not pool.prefers_private_ip       # the pool overrides the provider
    assert pool.checks_host_keys
    label = pool.labels["ubuntu"]
    assert label.checks_host_keys is True
    assert label.cloud_image_name == "ubuntu-by-id"
    assert provider.label_image(label) is provider.cloud_images[
        "ubuntu-by-id"]
    assert (provider.node_cloud, provider.node_region) == (None, "us-west-2")
    assert provider.diskimages["custom"].upload_metadata == {"team": "ci"}
    # No image-name-format: uploads get the default name.
    assert provider.external_image_name("custom", "0000000001", 42) == \
        "custom-42"


def test_azure_labels_leave_host_keys_to_the_pool():
    provider = load("azure").providers["azure-east"]
    pool = provider.pools["main"]
    for label in pool.labels.values():
        assert label.checks_host_keys is None
    assert pool.checks_host_keys == pool.host_key_checking
    assert pool.quota_limits() == {"instances": 10}
    assert pool.checks_provider_quota


def test_kubernetes_pool_limits_and_no_scan():
    pool = load("kubernetes").providers["kubespray"].pools["main"]
    assert pool.quota_limits() == {
        "instances": 5, "cores": 100, "ram": 8192, "mygpu": 4}
    assert not pool.checks_host_keys
    for label in pool.labels.values():
        assert label.checks_host_keys is None    # the pool decides


def test_metastatic_host_key_checking_label_then_pool():
    pools = load("metastatic").providers["meta"].pools
    main = pools["main"]
    assert main.checks_host_keys
    assert main.labels["user-label"].checks_host_keys       # pool's value
    assert not main.labels["other-user-label"].checks_host_keys
    assert main.quota_limits() == {"instances": 10}
