# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""What the loaded config objects contain: keys, defaults, semantics."""

import logging
import math
import os
import shutil

import pytest
import yaml

from nodepool import driver as registry
from nodepool.config import (
    ConfigValidationError, ConfigWatcher, FrozenDict, changed_providers,
    load_config)
from nodepool.driver.aws.config import AwsProviderConfig
from nodepool.driver.azure.config import AzureProviderConfig
from nodepool.driver.openstack.config import OpenStackProviderConfig
from nodepool.driver.static.config import StaticProviderConfig
from tests.configs import corpus


def load(name, **kwargs):
    scenario = corpus.read_scenario(corpus.valid_path(name))
    kwargs.setdefault("env", scenario.env)
    return load_config(scenario.path, scenario.secure, **kwargs)


def test_top_level_keys():
    config = load("openstack")
    assert config.elements_dir == "/etc/nodepool/elements"
    assert config.images_dir == "/opt/nodepool_dib"
    assert config.images_dir_required_free == 2048
    assert config.build_log_dir == "/var/log/nodepool/builds-os"
    assert config.build_log_retention == 3
    assert config.max_hold_age == 86400
    assert (config.webapp.port, config.webapp.listen_address) == (
        8022, "127.0.0.1")
    first, second = config.zookeeper_servers
    assert (first.host, first.port, first.chroot) == (
        "zk1.example.com", 2181, "/nodepool")
    assert second.port == 2281
    # One chroot for the connection, after the last server (kazoo's form).
    assert config.zookeeper_hosts == (
        "zk1.example.com:2181,[2001:db8::1]:2281/nodepool")
    assert config.zookeeper_tls.key == "/etc/nodepool/zk/client.key"
    assert config.zookeeper_timeout == 30.0
    limits = config.tenant_resource_limits["tenant-a"].limits
    assert dict(limits) == {"cores": 200, "ram": 16384, "instances": 10,
                            "volumes": 4, "volume-gb": 500,
                            "L-43DA4232": 224}
    label = config.labels["ubuntu-jammy"]
    assert (label.min_ready, label.max_ready_age) == (2, 3600)


def test_top_level_defaults():
    config = load("minimal")
    assert (config.webapp.port, config.webapp.listen_address) == (
        8005, "0.0.0.0")
    assert config.elements_dir is None and config.images_dir is None
    assert config.images_dir_required_free == 0
    assert config.build_log_dir == "/var/log/nodepool/builds"
    assert config.build_log_retention == 7
    assert config.zookeeper_servers == ()
    assert config.zookeeper_tls is None
    assert config.zookeeper_timeout == 10.0
    assert config.max_hold_age is None
    assert config.tenant_resource_limits == {}
    label = config.labels["small"]
    assert (label.min_ready, label.max_ready_age) == (0, 0)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "nodepool.yaml"
    for text in ("", "\n", "# only a comment\n", "---\n"):
        path.write_text(text)
        with pytest.raises(ConfigValidationError) as info:
            load_config(str(path))
        assert str(info.value) == (
            "%s: (top level): expected a mapping of configuration keys; "
            "found an empty file" % path)


def test_empty_secure_file_overrides_nothing():
    config = load("empty_secure")
    assert [s.host for s in config.zookeeper_servers] == ["zk.example.com"]


def test_integer_accepted_where_a_float_is_expected():
    config = load("integer_where_float")
    assert config.zookeeper_timeout == 20.0
    assert config.providers["cloud"].rate == 2.0


def test_openstack_provider():
    provider = load("openstack").providers["cloud1"]
    assert isinstance(provider, OpenStackProviderConfig)
    assert provider.driver == "openstack"
    assert (provider.cloud, provider.region_name) == ("vanilla-cloud",
                                                      "RegionOne")
    assert (provider.boot_timeout, provider.launch_timeout,
            provider.launch_retries, provider.image_upload_timeout) == (
        120, 1800, 5, 7200)
    assert provider.rate == 0.5
    assert provider.image_name_format == "np-{image_name}-{upload_id}"
    assert provider.clean_floating_ips is True
    assert provider.port_cleanup_interval == 0
    assert provider.max_concurrency == 10
    assert provider.manage_images
    image = provider.diskimages["ubuntu-jammy"]
    assert image.pause and image.config_drive
    assert image.meta == {"hw_disk_bus": "scsi"}
    assert image.connection_port == 2022
    # Taken from the top-level diskimage.
    assert (image.username, image.python_path, image.shell_type) == (
        "ubuntu", "/usr/bin/python3", "bash")
    windows = provider.cloud_images["windows-2022"]
    assert windows.connection_port == 5986
    assert windows.external_name == "Windows Server 2022"
    assert provider.cloud_images["by-id"].external_name == "0123-4567"
    pool = provider.pools["main"]
    assert pool.max_servers == 100 and pool.priority == 10
    assert pool.node_attributes["nested"] == {"a": 1}
    assert pool.availability_zones == ("az1", "az2")
    assert pool.max_volume_gb == 2000 and pool.ignore_provider_quota
    label = pool.labels["ubuntu-jammy"]
    assert label.networks == ("private",) and label.host_key_checking
    assert label.volume_size == 80 and label.boot_from_volume
    assert label.dynamic_instance_properties == {
        "tenant": "{request.tenant_name}"}
    # Label inherits networks and host-key-checking from its pool.
    windows_label = pool.labels["windows"]
    assert windows_label.networks == ("public", "private")
    assert windows_label.host_key_checking is False
    assert provider.supported_labels == {
        "ubuntu-jammy", "windows", "ubuntu-jammy-large"}


def test_openstack_defaults():
    provider = load("minimal").providers["cloud"]
    assert provider.driver == "openstack"
    assert (provider.boot_timeout, provider.launch_timeout,
            provider.launch_retries, provider.image_upload_timeout,
            provider.rate, provider.port_cleanup_interval,
            provider.max_concurrency, provider.priority) == (
        60, 3600, 3, 3600, 1.0, 600, -1, None)
    assert provider.image_name_format == "{image_name}-{timestamp}"
    assert provider.clean_floating_ips is None
    assert not provider.manage_images
    pool = provider.pools["main"]
    assert pool.max_servers == math.inf and pool.priority == 100
    assert pool.networks == () and pool.availability_zones is None
    assert pool.auto_floating_ip and pool.host_key_checking
    assert pool.max_cores == pool.max_ram == math.inf
    label = pool.labels["small"]
    assert (label.volume_size, label.console_log, label.key_name) == (
        50, False, None)
    image = provider.cloud_images["base"]
    assert (image.connection_type, image.connection_port,
            image.python_path, image.username) == ("ssh", 22, "auto", None)


def test_aws_provider():
    provider = load("aws").providers["ec2-us-west-2"]
    assert isinstance(provider, AwsProviderConfig)
    assert provider.rate == 5.0 and provider.image_type == "vhd"
    assert provider.object_storage.bucket_name == "nodepool-images"
    filters = provider.cloud_images["ubuntu-by-filter"].image_filters
    assert filters[0] == {"Name": "name", "Values": ("ubuntu-22.04-*",)}
    assert filters[1]["Name"] == "owner-id"
    image = provider.diskimages["custom"]
    assert image.username == "admin" and image.connection_port == 5986
    assert image.python_path == "/opt/python"
    assert image.shell_type == "bash"  # from the top-level diskimage
    assert (image.import_method, image.imds_support) == ("ebs-direct",
                                                         "v2.0")
    main = provider.pools["main"]
    assert main.max_servers == 10 and main.max_cores == 80
    assert main.max_ram == 512000  # from the provider
    assert main.max_resources == {"L-1216C47A": 20, "L-43DA4232": 50}
    assert main.public_ipv4 is True  # public-ip-address wins
    assert main.host_key_checking is True
    label = main.labels["ubuntu"]
    assert label.iam_instance_profile.name == "nodepool-role"
    assert label.use_spot and label.imdsv2 == "required"
    assert label.host_key_checking is True
    fleet = provider.pools["fleet"]
    assert fleet.max_servers == 50 and fleet.public_ipv4 is False
    assert fleet.public_ipv6 is True and fleet.use_internal_ip is True
    assert fleet.host_key_checking is False
    assert fleet.labels["ubuntu-fleet"].fleet.instance_types == (
        "t3.small", "t3a.small")


def test_azure_provider():
    config = load("azure")
    provider = config.providers["azure-east"]
    assert isinstance(provider, AzureProviderConfig)
    assert provider.image_type == "vhd" and provider.rate == 2.0
    assert provider.auth_path == "/etc/nodepool/azure.json"
    assert (provider.network.resource_group, provider.network.network,
            provider.network.subnet) == ("nodepool", "np-net", "np-subnet")
    assert provider.cloud_images["bionic"].image_reference["sku"] == (
        "18.04-LTS")
    assert provider.cloud_images["filtered"].key == "ssh-rsa AAAAdefault"
    assert provider.cloud_images["community"].community_gallery_image \
        .gallery_name == "public-gallery"
    image = provider.diskimages["custom"]
    assert image.username == "azureuser" and image.connection_port == 2222
    main = provider.pools["main"]
    assert (main.ipv4, main.ipv6) == (False, True)
    assert main.use_internal_ip is False and main.host_key_checking
    other = provider.pools["other"]
    # Pool falls back to provider: ipv4 true, ipv6 false.
    assert (other.ipv4, other.ipv6, other.use_internal_ip) == (
        True, False, True)
    label = main.labels["bionic"]
    assert label.hardware_profile == {"vm_size": "Standard_B1ls"}
    assert label.volume_size == 64
    west = config.providers["azure-west"]
    assert west.auth_path == "/etc/nodepool/azure-from-env.json"
    assert (west.network.network, west.network.subnet,
            west.network.resource_group) == ("plain-network", "default",
                                             "np-west")
    assert (west.rate, west.boot_timeout, west.public_ipv4) == (
        1.0, 120, True)


def test_static_provider():
    provider = load("static").providers["static-rack"]
    assert isinstance(provider, StaticProviderConfig)
    assert not provider.manage_images
    pool = provider.pools["main"]
    assert pool.priority == 5 and pool.max_servers == 3
    first, second, legacy = pool.nodes
    assert first.labels == ("trusty-static",)
    assert (first.timeout, first.connection_port, first.max_parallel_jobs,
            first.host_key) == (13, 22022, 2, ("fake-key",))
    # A winrm host without a port: 22, as nodepool 11 (not 5986).
    assert second.connection_port == 22 and not second.host_key_checking
    assert legacy.labels == ("small", "big")
    assert legacy.connection_port == 2200
    assert (legacy.username, legacy.timeout, legacy.python_path,
            legacy.connection_type) == ("zuul", 5, "auto", "ssh")
    assert legacy.identity == ("legacy.example.com", "zuul", 2200)
    assert set(pool.labels) == {"trusty-static", "small", "big"}


def test_diskimage_inheritance():
    images = load("inheritance").diskimages
    assert images["base"].abstract and not images["base"].buildable
    child = images["child"]
    assert not child.abstract
    assert child.elements == ("base-element", "intermediate-element",
                              "child-element")
    assert child.env_vars == {"BASE": "1", "SHARED": "intermediate",
                              "CHILD": "yes"}
    assert child.release == "9"
    assert child.formats == ("qcow2",)
    assert child.dib_cmd == "child-dib"
    # Falsy values do not override a parent's; delete-after-upload does.
    assert child.pause is True
    assert child.rebuild_age == 100
    assert child.delete_after_upload is False
    assert child.metadata == {}
    assert images["base"].metadata == {"from": "base"}
    sibling = images["sibling"]
    assert sibling.elements == ("base-element",)
    assert sibling.username == "other" and sibling.build_timeout == 28800
    assert sibling.python_path == "/usr/bin/python3"
    assert images["intermediate"].delete_after_upload is True


def test_diskimage_defaults():
    image = load("openstack").diskimages["ubuntu-jammy"]
    assert image.release == "22.04"
    config = load("secure_file")
    image = config.diskimages["image"]
    assert (image.dib_cmd, image.rebuild_age, image.build_timeout,
            image.username, image.python_path, image.release) == (
        "disk-image-create", 86400, 28800, "zuul", "auto", "")
    assert image.formats is None and image.shell_type is None
    assert image.elements == () and not image.pause


def test_env_substitution():
    config = load("env_substitution")
    assert config.webapp.port == 8123
    assert config.zookeeper_servers[0].host == "zk.example.org"
    assert config.zookeeper_servers[0].chroot == (
        "/%(HOME)s-%(NODEPOOL_UNSET)s")
    assert config.providers["cloud"].cloud == "subst-cloud"


def test_env_substitution_defaults_to_os_environ(monkeypatch):
    scenario = corpus.read_scenario(corpus.valid_path("env_substitution"))
    for name, value in scenario.env.items():
        monkeypatch.setenv(name, value)
    assert load_config(scenario.path).webapp.port == 8123


def test_secure_file_merge():
    config = load("secure_file")
    server, = config.zookeeper_servers
    assert (server.host, server.port, server.chroot) == (
        "secret-zk.example.com", 2999, "/secret")
    assert config.zookeeper_tls.cert == "/secure/cert.pem"
    assert config.diskimages["image"].env_vars == {
        "PUBLIC": "visible", "OVERRIDDEN": "secure",
        "DIB_PASSWORD": "s3cr3t-value"}


def test_without_secure_file_main_values_stay():
    config = load_config(corpus.valid_path("secure_file"))
    assert config.zookeeper_servers[0].host == "public-zk.example.com"
    assert config.zookeeper_tls is None
    assert "DIB_PASSWORD" not in config.diskimages["image"].env_vars


def test_secrets_not_in_repr():
    config = load("secure_file")
    for text in (repr(config), str(config),
                 repr(config.diskimages["image"])):
        assert "s3cr3t-value" not in text
    azure = load("azure")
    assert "hunter2" not in repr(azure)
    image = azure.providers["azure-east"].cloud_images["windows"]
    assert image.password == "hunter2-cloud-image-password"
    assert "hunter2" not in repr(image)


def test_objects_are_immutable():
    config = load("openstack")
    with pytest.raises(AttributeError):
        config.labels = {}
    with pytest.raises(TypeError):
        config.labels["new"] = None
    assert isinstance(config.providers, FrozenDict)
    assert isinstance(config.providers["cloud1"].pools["main"]
                      .security_groups, tuple)


def _copy_corpus_file(tmp_path, name):
    target = tmp_path / (name + ".yaml")
    shutil.copy(corpus.valid_path(name), target)
    return target


def test_change_of_one_provider_changes_only_that_provider(tmp_path):
    path = tmp_path / "config.yaml"
    data = yaml.safe_load(open(corpus.valid_path("openstack")))
    static = yaml.safe_load(open(corpus.valid_path("static")))
    data["labels"] += static["labels"]
    data["providers"] += static["providers"]
    text = yaml.safe_dump(data)
    path.write_text(text)
    before = load_config(str(path))
    assert set(before.providers) == {"cloud1", "static-rack"}
    path.write_text(text.replace("launch-retries: 5", "launch-retries: 6"))
    after = load_config(str(path))
    assert after != before
    assert after.providers["static-rack"] == before.providers["static-rack"]
    assert after.providers["cloud1"] != before.providers["cloud1"]
    assert changed_providers(before, after) == {"cloud1"}
    assert changed_providers(before, before) == set()
    assert changed_providers(None, before) == {"cloud1", "static-rack"}
    # A label's min-ready is not provider config.
    path.write_text(text.replace("min-ready: 2", "min-ready: 3"))
    relabeled = load_config(str(path))
    assert relabeled != before and changed_providers(before, relabeled) == set()


def test_top_level_diskimage_change_reaches_provider_image(tmp_path):
    path = _copy_corpus_file(tmp_path, "openstack")
    before = load_config(str(path))
    path.write_text(path.read_text().replace(
        "username: ubuntu", "username: cloud-user"))
    after = load_config(str(path))
    assert changed_providers(before, after) == {"cloud1"}


def test_different_classes_are_unequal():
    static = load("static").providers["static-rack"]
    pool = static.pools["main"]
    assert static != pool and pool != static.pools["main"].nodes[0]


def test_watcher_keeps_running_config_on_invalid_reload(tmp_path, caplog):
    path = _copy_corpus_file(tmp_path, "minimal")
    watcher = ConfigWatcher(str(path), env={})
    first = watcher.load()
    assert watcher.reload() == (first, False)
    text = path.read_text()
    path.write_text(text.replace("cloud: mycloud", "cloud: [broken]"))
    os.utime(path, ns=(1, 1))
    with caplog.at_level(logging.ERROR, logger="nodepool.config"):
        config, changed = watcher.reload()
    assert config is first and not changed
    assert "providers[0].cloud" in caplog.text
    path.write_text(text.replace("cloud: mycloud", "cloud: other"))
    os.utime(path, ns=(2, 2))
    config, changed = watcher.reload()
    assert changed and config.providers["cloud"].cloud == "other"


def test_registry():
    assert registry.driver_names() == [
        "aws", "azure", "gce", "ibmvpc", "kubernetes", "metastatic",
        "openshift", "openshiftpods", "openstack", "static"]
    driver = registry.get_driver("static")
    assert driver is registry.get_driver("static")
    assert driver.name == "static"
    with pytest.raises(KeyError):
        registry.get_driver("nosuch")
    with pytest.raises(ValueError):
        registry.register_driver("bad", "no-colon")
