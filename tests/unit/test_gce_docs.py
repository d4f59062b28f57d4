# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Every key the GCE schema accepts is on the driver's page."""

import os

from nodepool.driver.gce import config

PAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "doc", "source", "drivers", "gce.rst")


def test_every_key_documented():
    keys = set()
    for section in (config.PROVIDER, config.POOL, config.LABEL,
                    config.CLOUD_IMAGE):
        keys |= set(section.key_names())
    with open(PAGE) as f:
        text = f.read()
    assert not sorted(k for k in keys if "``%s``" % k not in text)
    assert {"image-family", "volume-type", "use-internal-ip",
            "rate-limit", "host-key-checking"} <= keys
