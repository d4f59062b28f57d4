# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Every key the IBM VPC schema accepts is on the driver's page, and the
provider table's defaults are the schema's."""

import os
import re

from nodepool.driver.ibmvpc import config

PAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "doc", "source", "drivers", "ibmvpc.rst")


def _text():
    with open(PAGE) as f:
        return f.read()


def test_every_key_documented():
    keys = set()
    for section in (config.PROVIDER, config.POOL, config.LABEL,
                    config.CLOUD_IMAGE, config.PROVIDER_DISKIMAGE,
                    config.OBJECT_STORAGE, config.QUOTA, config.IMAGE_FILTER,
                    config.OPERATING_SYSTEM):
        keys |= set(section.key_names())
    text = _text()
    assert not sorted(k for k in keys if "``%s``" % k not in text)
    assert {"credentials-file", "object-storage", "image-filter",
            "dedicated-host-only", "bucket-name", "profile"} <= keys


def test_provider_defaults_match_the_schema():
    text = _text()
    rows = dict(re.findall(
        r"\* - ``([a-z0-9-]+)``\n\s+- [^\n]+\n\s+- ([^\n]+)\n",
        text[text.index("Provider keys"):text.index("``object-storage``\n~")]))
    defaults = {"public-ipv4": "false", "use-internal-ip": "false",
                "host-key-checking": "true", "rate": "1.0",
                "adaptive-rate": "true", "boot-timeout": "120",
                "launch-timeout": "3600", "launch-retries": "3"}
    for key, value in defaults.items():
        assert rows[key] == value, key
    data = config.PROVIDER({
        "name": "p", "driver": "ibmvpc", "vpc": "v", "region": "r",
        "pools": []})
    for key, value in defaults.items():
        assert str(data[key.replace("-", "_")]).lower() == value, key
