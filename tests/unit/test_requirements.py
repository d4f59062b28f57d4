# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""requirements.txt allows no release with a known vulnerability that
nodepool is exposed to, and the environment the tests run in meets it."""

import os
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# The first release without the vulnerability, and why it matters here.
FIXED_IN = {
    # Terrapin (CVE-2023-48795): prefix truncation of the SSH channel;
    # nodepool's host-key scans and the static driver use paramiko.
    "paramiko": "3.4.0",
    # CVE-2024-35255: elevation of privilege in the managed-identity
    # credential the Azure driver may use.
    "azure-identity": "1.16.1",
    # CVE-2024-26130 (a crash on a crafted PKCS#12 file) and earlier
    # OpenSSL fixes; nodepool reads its certificate subject with it.
    "cryptography": "42.0.4",
}


def requirements():
    with open(os.path.join(TOP, "requirements.txt")) as f:
        lines = [line.split("#")[0].strip() for line in f]
    return {req.name.lower(): req
            for req in (Requirement(line) for line in lines if line)}


@pytest.mark.parametrize("name", sorted(FIXED_IN))
def test_floor_excludes_vulnerable_releases(name):
    req = requirements()[name]
    fixed = Version(FIXED_IN[name])
    # Every release the specifier admits is at least the fixed one: the
    # last release before it must be refused.
    assert not req.specifier.contains(
        Version("%d.%d.%d" % _just_before(fixed)), prereleases=True), req
    assert req.specifier.contains(fixed), req


def _just_before(version):
    major, minor, micro = (list(version.release) + [0, 0])[:3]
    if micro:
        return major, minor, micro - 1
    if minor:
        return major, minor - 1, 999
    return major - 1, 999, 999


def test_installed_packages_meet_requirements():
    for name, req in requirements().items():
        installed = metadata.version(name)
        assert req.specifier.contains(installed, prereleases=True), (
            "%s %s installed, %s required" % (name, installed, req))
