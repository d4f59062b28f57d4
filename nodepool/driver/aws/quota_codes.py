# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Which AWS Service Quotas code limits what a label uses.

EC2 does not limit instances one by one: it limits the running vCPUs per
group of instance families, with separate groups (and codes) for
on-demand and spot capacity.  Dedicated hosts are limited per host family,
and EBS volumes per volume type (storage in TiB, and provisioned IOPS).
The tables below map a family prefix to the code; anything not in them is
logged by the adapter and left unlimited rather than guessed.
"""

import re
from typing import Optional

# Family prefix (the letters before the first digit of an instance type)
# -> (on-demand code, spot code).  Both are counted in vCPUs.
INSTANCE_FAMILY_CODES = {}
for _families, _codes in (
        # Standard (A, C, D, H, I, M, R, T, Z).
        (("a", "c", "d", "h", "i", "m", "r", "t", "z"),
         ("L-1216C47A", "L-34B43A08")),
        (("f",), ("L-74FC7D96", "L-88CF9481")),
        (("g", "vt"), ("L-DB2E81BA", "L-3819A6DF")),
        (("inf",), ("L-1945791B", "L-B5D1601B")),
        (("p",), ("L-417A185B", "L-7212CCBC")),
        (("x",), ("L-7295265B", "L-E3A00192")),
        (("dl",), ("L-6E869C2A", "L-85EED4F7")),
        (("trn",), ("L-2C3B7624", "L-6B0D517C")),
        # High memory instances have no spot market.
        (("u-",), ("L-43DA4232", None)),
        (("hpc",), ("L-F7808C92", None))):
    for _family in _families:
        INSTANCE_FAMILY_CODES[_family] = _codes

# EBS volume type -> (storage code, IOPS code or None).  Storage limits are
# reported in TiB; the adapter converts them to GB to match volume sizes.
VOLUME_TYPE_CODES = {
    "standard": ("L-9CF3C2EB", None),
    "gp2": ("L-D18FCD1D", None),
    "gp3": ("L-7A658B76", None),
    "io1": ("L-FD252861", "L-B3A130E6"),
    "io2": ("L-09BD8365", "L-8D977E7E"),
    "st1": ("L-82ACEF56", None),
    "sc1": ("L-17AF77E8", None),
}

# Dedicated host quotas are one code per host family ("Running Dedicated
# m5 Hosts"); rather than carry a table of ~100 codes that AWS extends with
# every new family, the adapter finds them by name in the EC2 quota list.
_HOST_QUOTA_NAME = re.compile(r"^Running Dedicated (\S+) Hosts$")

_FAMILY = re.compile(r"^([a-z-]+?)(?=\d)")


def instance_family(instance_type: str) -> Optional[str]:
    """The family prefix of an instance type: ``m`` for ``m5.large``,
    ``u-`` for ``u-6tb1.metal``, ``inf`` for ``inf2.xlarge``."""
    match = _FAMILY.match(instance_type)
    return match.group(1) if match else None


def host_family(instance_type: str) -> str:
    """The dedicated host family of an instance type (``m5`` for
    ``m5.large``)."""
    return instance_type.split(".", 1)[0]


def instance_quota_code(instance_type: str, spot: bool) -> Optional[str]:
    """The vCPU quota code for running ``instance_type``, or None."""
    family = instance_family(instance_type)
    codes = INSTANCE_FAMILY_CODES.get(family)
    if codes is None:
        return None
    return codes[1] if spot else codes[0]


def volume_quota_codes(volume_type: str) -> tuple:
    """``(storage code, iops code)`` for an EBS volume type (each may be
    None)."""
    return VOLUME_TYPE_CODES.get(volume_type, (None, None))


def host_quota_family(quota_name: str) -> Optional[str]:
    """The host family a quota named ``Running Dedicated <f> Hosts``
    limits, or None for any other quota."""
    match = _HOST_QUOTA_NAME.match(quota_name or "")
    return match.group(1) if match else None


def ec2_codes() -> set:
    """Every EC2 instance code in the family table."""
    return {code for pair in INSTANCE_FAMILY_CODES.values()
            for code in pair if code}


def ebs_codes() -> set:
    """Every EBS code in the volume table."""
    return {code for pair in VOLUME_TYPE_CODES.values()
            for code in pair if code}
