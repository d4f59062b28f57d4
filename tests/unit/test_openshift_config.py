# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Config of the OpenShift drivers: label kinds, the pools' default
max-servers, and the keys only they have."""

import math
import textwrap

import pytest

from nodepool.config import ConfigValidationError, load_config
from nodepool.driver.openshift.config import OpenshiftLabel


def _load(tmp_path, provider):
    path = tmp_path / "nodepool.yaml"
    path.write_text(textwrap.dedent("""
        labels:
          - name: a
          - name: b
        providers:
    """) + textwrap.indent(textwrap.dedent(provider), "  "))
    return load_config(str(path)).providers["p"]


OPENSHIFT = """
- name: p
  driver: openshift
  context: c
  {limits}
  pools:
    - name: main
      labels:
        - name: a
          type: project
        - name: b
          type: something-else
"""


@pytest.mark.parametrize("limits,expected", [
    ("", math.inf),
    ("max-servers: 3", 3),
    ("max-projects: 2", 2),
    ("max-projects: 2\n  max-servers: 3", 2),
])
def test_openshift_pool_default_servers(tmp_path, limits, expected):
    provider = _load(tmp_path, OPENSHIFT.format(limits=limits))
    assert provider.pools["main"].max_servers == expected


def test_openshift_label_kinds(tmp_path):
    provider = _load(tmp_path, OPENSHIFT.format(limits=""))
    labels = provider.pools["main"].labels
    assert isinstance(labels["a"], OpenshiftLabel)
    # Anything but "pod" is a project, as in nodepool 11.
    assert labels["a"].kind == labels["b"].kind == "namespace"
    assert labels["a"].image_pull_secrets == ()


def test_openshiftpods_max_pods_and_labels(tmp_path):
    provider = _load(tmp_path, """
        - name: p
          driver: openshiftpods
          context: c
          max-pods: 4
          pools:
            - name: project1
              labels:
                - name: a
                  image: fedora
                  image-pull-secrets: [{name: s}]
    """)
    pool = provider.pools["project1"]
    assert pool.max_servers == 4
    assert pool.labels["a"].kind == "pod"
    assert pool.labels["a"].image_pull_secrets == ({"name": "s"},)


def test_kubernetes_has_no_pull_secrets(tmp_path):
    with pytest.raises(ConfigValidationError) as e:
        _load(tmp_path, """
            - name: p
              driver: kubernetes
              pools:
                - name: main
                  labels:
                    - name: a
                      type: pod
                      image-pull-secrets: []
        """)
    assert "image-pull-secrets" in str(e.value)
