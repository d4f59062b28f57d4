# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The IBM SDK clients of a provider and its startup lookups."""

import os
import threading
from typing import Optional

from nodepool import exceptions
from nodepool.driver.ibmvpc.statemachines import pool_group

API_VERSION = "2024-04-30"
# The SDKs read the credentials file named by this variable; the
# variable is process-wide, so it is only set while holding the lock.
_CREDENTIALS_VARIABLE = "IBM_CREDENTIALS_FILE"
_ENV_LOCK = threading.Lock()


class IbmClients:
    """The SDK clients of one provider: ``vpc`` (ibm_vpc.VpcV1),
    ``resource_manager`` (ResourceManagerV2) and ``resource_controller``
    (ResourceControllerV2), sharing ``authenticator``.  The SDK clients
    are used from several threads; they keep no state per request."""

    def __init__(self, vpc, resource_manager, resource_controller=None,
                 authenticator=None):
        self.vpc = vpc
        self.resource_manager = resource_manager
        self.resource_controller = resource_controller
        self.authenticator = authenticator

    @classmethod
    def from_credentials(cls, path: Optional[str],
                         region: str) -> "IbmClients":
        # Imported here: the SDKs are only needed once a provider runs.
        from ibm_cloud_sdk_core import get_authenticator_from_environment
        from ibm_platform_services import (
            ResourceControllerV2, ResourceManagerV2)
        from ibm_vpc import VpcV1

        with _ENV_LOCK:
            saved = os.environ.get(_CREDENTIALS_VARIABLE)
            if path:
                os.environ[_CREDENTIALS_VARIABLE] = path
            try:
                authenticator = get_authenticator_from_environment("vpc")
                if authenticator is None:
                    raise exceptions.ConfigError(
                        "No IBM Cloud credentials for service vpc in %s"
                        % (path or "the environment"))
                vpc = VpcV1(version=API_VERSION, authenticator=authenticator)
                vpc.set_service_url(
                    VpcV1.get_service_url_for_region(region)
                    or "https://%s.iaas.cloud.ibm.com/v1" % region)
                vpc.configure_service("vpc")
                manager = ResourceManagerV2(authenticator=authenticator)
                manager.configure_service("resource_manager")
                controller = ResourceControllerV2(authenticator=authenticator)
                controller.configure_service("resource_controller")
            finally:
                if saved is None:
                    os.environ.pop(_CREDENTIALS_VARIABLE, None)
                else:
                    os.environ[_CREDENTIALS_VARIABLE] = saved
        return cls(vpc, manager, controller, authenticator)


class Setup:
    """What the startup lookups found."""

    def __init__(self, vpc, groups, profiles, subnets, keys):
        self.vpc = vpc
        self.groups = groups          # name -> id
        self.group_names = {v: k for k, v in groups.items()}
        self.profiles = profiles      # name -> record
        self.subnets = subnets        # name -> record
        self.keys = keys              # name -> record


def look_up(adapter) -> "Setup":
    """The startup lookups of ``adapter``, in nodepool 11's order: the
    VPC, resource groups (creating the pools' missing ones), instance
    profiles, subnets (each pool's must be in its zone), SSH keys."""
    provider = adapter.provider
    vpcs = {v["name"]: v for v in adapter.list_all(
        "vpcs", adapter.vpc.list_vpcs)}
    vpc = vpcs.get(provider.vpc)
    if vpc is None:
        raise exceptions.RuntimeConfigurationException(
            "VPC %s not found in %s" % (provider.vpc, provider.region))
    manager = adapter.clients.resource_manager
    groups = {g["name"]: g["id"] for g in adapter.call(
        "List resource groups", manager.list_resource_groups).get(
            "resources") or ()}
    for pool in provider.pools.values():
        name = pool_group(provider.name, pool.name)
        if name not in groups:
            adapter.log.info("Creating resource group %s", name)
            groups[name] = adapter.call(
                "Create resource group %s" % name,
                manager.create_resource_group, name=name)["id"]
    profiles = {p["name"]: p for p in adapter.call(
        "List instance profiles", adapter.vpc.list_instance_profiles).get(
            "profiles") or ()}
    subnets = {s["name"]: s for s in adapter.list_all(
        "subnets", adapter.vpc.list_subnets)}
    for pool in provider.pools.values():
        subnet = subnets.get(pool.subnet)
        if subnet is None:
            raise exceptions.RuntimeConfigurationException(
                "Subnet %s of pool %s not found" % (pool.subnet,
                                                    pool.name))
        if subnet["zone"]["name"] != pool.zone:
            raise exceptions.RuntimeConfigurationException(
                "Subnet %s is in zone %s, pool %s in %s" % (
                    pool.subnet, subnet["zone"]["name"], pool.name,
                    pool.zone))
    keys = {k["name"]: k for k in adapter.list_all(
        "keys", adapter.vpc.list_keys)}
    return Setup(vpc, groups, profiles, subnets, keys)
