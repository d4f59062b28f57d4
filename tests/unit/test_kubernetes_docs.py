# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Every key the Kubernetes-family schemas accept is on its driver's page."""

import importlib
import os

import pytest

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "doc", "source", "drivers")


@pytest.mark.parametrize("module,page", [
    ("nodepool.driver.kubernetes.config", "kubernetes"),
    ("nodepool.driver.openshift.config", "openshift"),
    ("nodepool.driver.openshiftpods.config", "openshiftpods"),
])
def test_every_key_documented(module, page):
    config = importlib.import_module(module)
    keys = set(config.PROVIDER.key_names()) | set(config.POOL.key_names())
    for section in config.LABEL.sections:
        keys |= set(section.key_names())
    keys |= {"name", "value"}  # of each env item
    with open(os.path.join(DOCS, page + ".rst")) as f:
        text = f.read()
    missing = sorted(k for k in keys if "``%s``" % k not in text)
    assert not missing
    # The walk reached the label keys.
    assert {"image", "spec", "dynamic-labels", "max-cores",
            "default-label-cpu"} <= keys
