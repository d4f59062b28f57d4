# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The driver registry.

Drivers are registered explicitly by name as ``"module:Class"`` strings and
imported only when first asked for, so that loading a config that uses one
driver never imports another driver's cloud SDK.  Nothing scans folders.
"""

import importlib
import threading

_REGISTRY = {
    "openstack": "nodepool.driver.openstack:OpenStackDriver",
    "aws": "nodepool.driver.aws:AwsDriver",
    "azure": "nodepool.driver.azure:AzureDriver",
    "static": "nodepool.driver.static:StaticDriver",
    "kubernetes": "nodepool.driver.kubernetes:KubernetesDriver",
    "openshift": "nodepool.driver.openshift:OpenshiftDriver",
    "openshiftpods": "nodepool.driver.openshiftpods:OpenshiftPodsDriver",
    "metastatic": "nodepool.driver.metastatic:MetastaticDriver",
    "gce": "nodepool.driver.gce:GceDriver",
    "ibmvpc": "nodepool.driver.ibmvpc:IbmVpcDriver",
}

_instances = {}
_lock = threading.Lock()


def register_driver(name: str, target: str) -> None:
    """Register (or replace) a driver: ``target`` is ``"module:Class"``."""
    if ":" not in target:
        raise ValueError("driver target must look like 'module:Class'")
    with _lock:
        _REGISTRY[name] = target
        _instances.pop(name, None)


def unregister_driver(name: str) -> None:
    """Forget a registered driver (tests register their own)."""
    with _lock:
        _REGISTRY.pop(name, None)
        _instances.pop(name, None)


def driver_names() -> list:
    """Names of all registered drivers, sorted."""
    return sorted(_REGISTRY)


def get_driver(name: str):
    """The (shared) driver instance for ``name``.

    Raises :class:`KeyError` for an unregistered name.  The driver's module
    is imported on first use.
    """
    with _lock:
        driver = _instances.get(name)
        if driver is None:
            module_name, _, class_name = _REGISTRY[name].partition(":")
            module = importlib.import_module(module_name)
            driver = getattr(module, class_name)()
            _instances[name] = driver
        return driver
