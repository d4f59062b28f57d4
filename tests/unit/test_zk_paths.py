# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Path builders and the parsers the tree caches rely on."""

import pytest

from nodepool.zk import paths

CONTENDER = "5f0e3c7a9b1d4e2f8a6c0b3d5e7f9a1c__lock__0000000003"
BUILD = "8d2f1c0e4b6a49f7a3e5d1c9b7f20e4a"
IMG = "/nodepool/images/ubuntu-jammy"
B = IMG + "/builds/" + BUILD
P = B + "/providers/rax-dfw"
U = P + "/images/0000000001"

# path -> (parse_node_path, parse_node_lock_path)
NODE_TABLE = {
    "/nodepool/nodes/0000000001": (("0000000001",), None),
    "/nodepool/nodes/0000000001/lock": (None, None),
    "/nodepool/nodes/0000000001/lock/" + CONTENDER:
        (None, ("0000000001", CONTENDER)),
    "/nodepool/nodes/0000000001/lock/" + CONTENDER + "/x": (None, None),
    "/nodepool/nodes/0000000001/other": (None, None),
    "/nodepool/nodes/0000000001/other/x": (None, None),
    "/nodepool/nodes/0000000001/": (None, None),
    "/nodepool/nodes/0000000001/lock/": (None, None),
    "/nodepool/nodes//lock/x": (None, None),
    "/nodepool/nodes/lock": (None, None),
    "/nodepool/nodes/lock/lock/x": (None, None),
    "/nodepool/nodes": (None, None),
    "/nodepool/nodes/": (None, None),
    "/nodepool/nodes-other/0000000001": (None, None),
    "/nodepool/nodes-other/0000000001/lock/" + CONTENDER: (None, None),
    "/nodepool/nodesx": (None, None),
    "/nodepool": (None, None),
    "/": (None, None),
    "": (None, None),
    "nodepool/nodes/0000000001": (None, None),
    "/other/nodepool/nodes/0000000001": (None, None),
    "/nodepool/requests/100-0000000001": (None, None),
    IMG: (None, None),
}

REQUEST_TABLE = {
    "/nodepool/requests/100-0000000042": ("100-0000000042",),
    "/nodepool/requests/900-0000000001": ("900-0000000001",),
    "/nodepool/requests/100-0000000042/lock": None,
    "/nodepool/requests/100-0000000042/lock/" + CONTENDER: None,
    "/nodepool/requests/100-0000000042/": None,
    "/nodepool/requests/lock": None,
    "/nodepool/requests": None,
    "/nodepool/requests/": None,
    "/nodepool/requests-lock/100-0000000042": None,
    "/nodepool/requests-lock/100-0000000042/" + CONTENDER: None,
    "/nodepool/nodes/0000000001": None,
    "/nodepool/requestsx/100-0000000042": None,
}

REQUEST_LOCK_TABLE = {
    "/nodepool/requests-lock/100-0000000042": ("100-0000000042",),
    "/nodepool/requests-lock/100-0000000042/" + CONTENDER: None,
    "/nodepool/requests-lock": None,
    "/nodepool/requests-lock/": None,
    "/nodepool/requests/100-0000000042": None,
}

# path -> (parse_image_path, parse_image_pause_path)
IMAGE_TABLE = {
    IMG: (("ubuntu-jammy",), None),
    IMG + "/pause": (None, "ubuntu-jammy"),
    IMG + "/pause/x": (None, None),
    IMG + "/request-build": (None, None),
    IMG + "/builds": (None, None),
    IMG + "/builds/lock": (None, None),
    IMG + "/builds/lock/" + CONTENDER: (None, None),
    B: (("ubuntu-jammy", BUILD), None),
    IMG + "/builds/0000000007": (("ubuntu-jammy", "0000000007"), None),
    B + "/lock": (None, None),
    B + "/lock/" + CONTENDER: (None, None),
    B + "/providers": (None, None),
    P: (None, None),
    P + "/images": (None, None),
    P + "/images/lock": (None, None),
    P + "/images/lock/" + CONTENDER: (None, None),
    U: (("ubuntu-jammy", BUILD, "rax-dfw", "0000000001"), None),
    U + "/lock": (None, None),
    U + "/lock/" + CONTENDER: (None, None),
    U + "/": (None, None),
    IMG + "/": (None, None),
    B + "/": (None, None),
    # Intermediate segment names are checked.
    IMG + "/other/" + BUILD: (None, None),
    B + "/other/rax-dfw/images/0000000001": (None, None),
    P + "/other/0000000001": (None, None),
    # No object segment may be "lock".
    "/nodepool/images/lock": (None, None),
    "/nodepool/images/lock/pause": (None, None),
    B + "/providers/lock/images/0000000001": (None, None),
    # Junk, the root and other trees.
    IMG + "/junk": (None, None),
    IMG + "/junk/deeper/still": (None, None),
    "/nodepool/images": (None, None),
    "/nodepool/images/": (None, None),
    "/nodepool/images-other/ubuntu-jammy": (None, None),
    "/nodepool/images-other/ubuntu-jammy/pause": (None, None),
    "/nodepool/nodes/0000000001": (None, None),
    "/nodepool/components/pool/host0000000001": (None, None),
}


@pytest.mark.parametrize("path,expected", sorted(NODE_TABLE.items()))
def test_node_parsers(path, expected):
    assert paths.parse_node_path(path) == expected[0]
    assert paths.parse_node_lock_path(path) == expected[1]
    if path.startswith(paths.NODE_ROOT):
        # Nothing in the node tree is an image or a request.
        assert paths.parse_request_path(path) is None
        assert paths.parse_image_path(path) is None


@pytest.mark.parametrize("path,expected", sorted(REQUEST_TABLE.items()))
def test_request_parser(path, expected):
    assert paths.parse_request_path(path) == expected
    if path.startswith(paths.REQUEST_ROOT):
        assert paths.parse_node_path(path) is None


@pytest.mark.parametrize("path,expected", sorted(REQUEST_LOCK_TABLE.items()))
def test_request_lock_parser(path, expected):
    assert paths.parse_request_lock_path(path) == expected


@pytest.mark.parametrize("path,expected", sorted(IMAGE_TABLE.items()))
def test_image_parsers(path, expected):
    assert paths.parse_image_path(path) == expected[0]
    assert paths.parse_image_pause_path(path) == expected[1]
    if path.startswith(paths.IMAGE_ROOT):
        assert paths.parse_node_path(path) is None
        assert paths.parse_request_path(path) is None


@pytest.mark.parametrize("path,expected", [
    ("/nodepool/components/pool/host.example.com0000000003",
     ("pool", "host.example.com0000000003")),
    ("/nodepool/components/launcher/h0000000000", ("launcher", "h0000000000")),
    ("/nodepool/components/pool", None),
    ("/nodepool/components", None),
    ("/nodepool/components/pool/h0000000000/x", None),
    ("/nodepool/components/pool/", None),
])
def test_component_parser(path, expected):
    assert paths.parse_component_path(path) == expected


def test_parsers_reject_non_strings():
    for parser in (paths.parse_node_path, paths.parse_node_lock_path,
                   paths.parse_request_path, paths.parse_image_path,
                   paths.parse_image_pause_path):
        assert parser(None) is None
        assert parser(b"/nodepool/nodes/0000000001") is None


def test_constants():
    assert paths.NODE_ROOT == "/nodepool/nodes"
    assert paths.REQUEST_ROOT == "/nodepool/requests"
    assert paths.REQUEST_LOCK_ROOT == "/nodepool/requests-lock"
    assert paths.IMAGE_ROOT == "/nodepool/images"
    assert paths.COMPONENT_ROOT == "/nodepool/components"
    assert paths.ELECTION_ROOT == "/nodepool/elections"
    assert paths.STATS_ELECTION == "/nodepool/elections/stats"
    assert paths.LAUNCHER_ROOT == "/nodepool/launchers"
    assert paths.HOLD_REQUEST_ROOT == "/zuul/hold-requests"


def test_builders():
    assert paths.node_path("0000000001") == "/nodepool/nodes/0000000001"
    assert paths.node_lock_path("0000000001") == \
        "/nodepool/nodes/0000000001/lock"
    assert paths.request_path("100-0000000042") == \
        "/nodepool/requests/100-0000000042"
    assert paths.request_prefix("200") == "/nodepool/requests/200-"
    assert paths.request_prefix(100) == "/nodepool/requests/100-"
    assert paths.request_prefix(paths.PRIORITY_MIN_READY) == \
        "/nodepool/requests/900-"
    assert paths.request_lock_path("100-0000000042") == \
        "/nodepool/requests-lock/100-0000000042"
    assert paths.image_path("ubuntu-jammy") == IMG
    assert paths.image_pause_path("ubuntu-jammy") == IMG + "/pause"
    assert paths.image_build_request_path("ubuntu-jammy") == \
        IMG + "/request-build"
    assert paths.builds_path("ubuntu-jammy") == IMG + "/builds"
    assert paths.build_lock_path("ubuntu-jammy") == IMG + "/builds/lock"
    assert paths.build_path("ubuntu-jammy", BUILD) == B
    assert paths.build_id_lock_path("ubuntu-jammy", BUILD) == B + "/lock"
    assert paths.build_providers_path("ubuntu-jammy", BUILD) == \
        B + "/providers"
    assert paths.build_provider_path("ubuntu-jammy", BUILD, "rax-dfw") == P
    assert paths.uploads_path("ubuntu-jammy", BUILD, "rax-dfw") == \
        P + "/images"
    assert paths.upload_lock_path("ubuntu-jammy", BUILD, "rax-dfw") == \
        P + "/images/lock"
    assert paths.upload_path("ubuntu-jammy", BUILD, "rax-dfw",
                             "0000000001") == U
    assert paths.upload_number_lock_path(
        "ubuntu-jammy", BUILD, "rax-dfw", "0000000001") == U + "/lock"
    assert paths.component_kind_path("pool") == "/nodepool/components/pool"
    assert paths.component_path("pool", "host0000000001") == \
        "/nodepool/components/pool/host0000000001"


BUILDERS = [
    (paths.node_path, 1), (paths.node_lock_path, 1),
    (paths.request_path, 1), (paths.request_lock_path, 1),
    (paths.image_path, 1), (paths.image_pause_path, 1),
    (paths.image_build_request_path, 1), (paths.builds_path, 1),
    (paths.build_lock_path, 1), (paths.build_path, 2),
    (paths.build_id_lock_path, 2), (paths.build_providers_path, 2),
    (paths.build_provider_path, 3), (paths.uploads_path, 3),
    (paths.upload_lock_path, 3), (paths.upload_path, 4),
    (paths.upload_number_lock_path, 4), (paths.component_kind_path, 1),
    (paths.component_path, 2),
]


@pytest.mark.parametrize("builder,arity", BUILDERS,
                         ids=[b.__name__ for b, _ in BUILDERS])
@pytest.mark.parametrize("bad", ["", "a/b", "/", "..", "."])
def test_builders_reject_bad_components(builder, arity, bad):
    for position in range(arity):
        args = ["x"] * arity
        args[position] = bad
        with pytest.raises(ValueError):
            builder(*args)


@pytest.mark.parametrize("builder,arity", BUILDERS,
                         ids=[b.__name__ for b, _ in BUILDERS])
def test_builders_reject_non_strings(builder, arity):
    for position in range(arity):
        args = ["x"] * arity
        args[position] = 1
        with pytest.raises(TypeError):
            builder(*args)


@pytest.mark.parametrize("bad", ["", "1/0", "1-0", -1])
def test_request_prefix_rejects(bad):
    with pytest.raises(ValueError):
        paths.request_prefix(bad)


def test_round_trips():
    assert paths.parse_node_path(paths.node_path("0000000007")) == \
        ("0000000007",)
    assert paths.parse_node_path(paths.node_lock_path("0000000007")) is None
    lock = paths.node_lock_path("0000000007")
    assert paths.parse_node_lock_path(lock + "/" + CONTENDER) == \
        ("0000000007", CONTENDER)
    assert paths.parse_request_path(paths.request_path("200-0000000003")) \
        == ("200-0000000003",)
    # A sequential create appends ten digits to the prefix.
    created = paths.request_prefix("300") + "0000000012"
    assert paths.parse_request_path(created) == ("300-0000000012",)
    assert paths.parse_request_lock_path(
        paths.request_lock_path("300-0000000012")) == ("300-0000000012",)
    assert paths.parse_image_path(paths.image_path("img")) == ("img",)
    assert paths.parse_image_pause_path(paths.image_pause_path("img")) == \
        "img"
    assert paths.parse_image_path(paths.build_path("img", BUILD)) == \
        ("img", BUILD)
    assert paths.parse_image_path(
        paths.upload_path("img", BUILD, "prov", "0000000002")) == \
        ("img", BUILD, "prov", "0000000002")
    assert paths.parse_component_path(paths.component_path("pool", "h1")) \
        == ("pool", "h1")
    # None of the non-record paths parse as records.
    for path in (paths.image_pause_path("img"),
                 paths.image_build_request_path("img"),
                 paths.builds_path("img"), paths.build_lock_path("img"),
                 paths.build_id_lock_path("img", BUILD),
                 paths.build_providers_path("img", BUILD),
                 paths.build_provider_path("img", BUILD, "prov"),
                 paths.uploads_path("img", BUILD, "prov"),
                 paths.upload_lock_path("img", BUILD, "prov"),
                 paths.upload_number_lock_path("img", BUILD, "prov", "1")):
        assert paths.parse_image_path(path) is None, path


def test_split_request_id():
    assert paths.split_request_id("100-0000000042") == ("100", "0000000042")
    assert paths.split_request_id("900-0000000001") == ("900", "0000000001")
    for bad in ("", "100", "-0000000001", "100-"):
        with pytest.raises(ValueError):
            paths.split_request_id(bad)
    with pytest.raises(TypeError):
        paths.split_request_id(None)


def test_lock_contender_sequence():
    assert paths.lock_contender_sequence(CONTENDER) == 3
    assert paths.lock_contender_sequence(
        "abc__rlock__0000000010") == 10
    assert paths.lock_contender_sequence("abc__lock__") is None
    assert paths.lock_contender_sequence("abc") is None
    assert paths.lock_contender_sequence("abc__lock__00x1") is None
