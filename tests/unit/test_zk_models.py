# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Record models against the JSON wire format of the ZooKeeper schema."""

import copy
import json
import time

import pytest
from kazoo.protocol.states import ZnodeStat

from nodepool.exceptions import InvalidRecordError
from nodepool.zk.models import (
    BuildState, Image, ImageBuild, ImageUpload, Node, NodeRequest, NodeState,
    RequestState, UploadState)

BUILD_ID = "8d2f1c0e4b6a49f7a3e5d1c9b7f20e4a"
UPLOAD_PATH = ("/nodepool/images/ubuntu-jammy/builds/%s/providers/rax-dfw/"
               "images/0000000001" % BUILD_ID)

NODE_KEYS = {
    "state", "state_time", "cloud", "provider", "pool", "type",
    "allocated_to", "az", "region", "public_ipv4", "private_ipv4",
    "public_ipv6", "host_id", "interface_ip", "connection_port", "ssh_port",
    "connection_type", "shell_type", "image_id", "launcher", "created_time",
    "external_id", "hostname", "comment", "user_data", "hold_job",
    "host_keys", "username", "hold_expiration", "resources", "slot",
    "attributes", "python_path", "tenant_name", "driver_data", "requestor",
    "node_properties",
}

REQUEST_KEYS = {
    "state", "state_time", "declined_by", "node_types", "nodes", "reuse",
    "requestor", "requestor_data", "provider", "relative_priority",
    "event_id", "created_time", "tenant_name",
}

# A READY OpenStack node as a nodepool 11 launcher stores it.
GOLDEN_NODE = {
    "state": "ready",
    "state_time": 1700000123.456789,
    "cloud": "rax",
    "provider": "rax-dfw",
    "pool": "main",
    "type": ["ubuntu-jammy"],
    "allocated_to": None,
    "az": "nova",
    "region": "DFW",
    "public_ipv4": "198.51.100.7",
    "private_ipv4": "10.0.0.7",
    "public_ipv6": "2001:db8::7",
    "host_id": "4c9e0d2a",
    "interface_ip": "198.51.100.7",
    "connection_port": 22,
    "ssh_port": 22,
    "connection_type": "ssh",
    "shell_type": None,
    "image_id": UPLOAD_PATH,
    "launcher": "nl01.example.com-PoolWorker.rax-dfw-main-"
                "0b1e6c9f5d2a4e7c8f3a1b2c3d4e5f60",
    "created_time": 1700000001.25,
    "external_id": "6a1f5e2c-3b4d-4e8f-9a0b-1c2d3e4f5a6b",
    "hostname": None,
    "comment": None,
    "user_data": None,
    "hold_job": None,
    "host_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample"],
    "username": "zuul",
    "hold_expiration": None,
    "resources": {"cores": 8, "instances": 1, "ram": 8192},
    "slot": None,
    "attributes": {"executor-zone": "dfw"},
    "python_path": "auto",
    "tenant_name": None,
    "driver_data": None,
    "requestor": None,
    "node_properties": {"spot": False},
}

# The same node after Zuul held it for an autohold request.
GOLDEN_HELD_NODE = dict(
    GOLDEN_NODE, state="hold", state_time=1700003600.5,
    allocated_to="200-0000000042", tenant_name="openstack",
    requestor="zuul01.example.com", hold_job="openstack opendev/x tox-py311",
    comment="debugging a flaky test", hold_expiration=86400)

# An AWS node with a dict external id and a non-default port.
GOLDEN_AWS_NODE = dict(
    GOLDEN_NODE, cloud="AWS", provider="aws-us-east-1", az="us-east-1a",
    region="us-east-1", external_id={"instance": "i-0123456789abcdef0",
                                     "host": "h-0123456789abcdef0"},
    connection_port=2222, ssh_port=2222, public_ipv6=None, public_ipv4="",
    node_properties={"spot": True, "fleet": False})

# A node record from an old launcher: one label as a string, only ssh_port.
LEGACY_NODE = {
    "state": "in-use",
    "state_time": 1500000000.0,
    "provider": "old-cloud",
    "pool": "main",
    "type": "ubuntu-xenial",
    "ssh_port": 2022,
    "interface_ip": "203.0.113.5",
    "created_time": 1499999000.0,
}

# A request as Zuul submits it (Zuul does not write every key).
ZUUL_REQUEST = {
    "state": "requested",
    "state_time": 1700000200.5,
    "node_types": ["ubuntu-jammy", "ubuntu-jammy", "centos-9"],
    "requestor": "zuul01.example.com",
    "requestor_data": {
        "build_set_uuid": "3f1c2d5e6a7b48c9a0b1c2d3e4f5a6b7",
        "tenant_name": "openstack",
        "pipeline_name": "check",
        "job_uuid": "9a8b7c6d5e4f40312a1b2c3d4e5f6a7b",
        "job_name": "tox-py311",
        "span_info": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c"
                                     "-b7ad6b7169203331-01"},
    },
    "provider": None,
    "relative_priority": 3,
    "event_id": "c6e5a1f0d2b34c7d8e9f0a1b2c3d4e5f",
    "created_time": 1700000200.25,
    "tenant_name": "openstack",
}

# A min-ready request as the launcher stores it.
MIN_READY_REQUEST = {
    "state": "fulfilled",
    "state_time": 1700000300.0,
    "declined_by": ["nl02.example.com-PoolWorker.other-main-0f0f"],
    "node_types": ["ubuntu-jammy"],
    "nodes": ["0000000007"],
    "reuse": False,
    "requestor": "NodePool:min-ready",
    "requestor_data": None,
    "provider": None,
    "relative_priority": 0,
    "event_id": "0d4e8c1f9a2b43c5b6a7d8e9f0a1b2c3",
    "created_time": None,
    "tenant_name": None,
}

GOLDEN_BUILD = {
    "state": "ready",
    "state_time": 1700000400.75,
    "builder": "nb01.example.com",
    "builder_id": "2b6f0a8e-5c1d-4f3a-9e7b-0c4d2a6f8e1b",
    "formats": "qcow2,raw,vhd",
    "username": "zuul",
    "python_path": "auto",
    "shell_type": None,
}

GOLDEN_UPLOAD = {
    "state": "ready",
    "state_time": 1700000500.5,
    "external_id": "ami-0123456789abcdef0",
    "external_name": "ubuntu-jammy-1700000400",
    "format": "raw",
    "username": "zuul",
    "python_path": "auto",
    "shell_type": None,
}


def make_stat(mzxid):
    return ZnodeStat(czxid=1, mzxid=mzxid, ctime=0, mtime=0, version=1,
                     cversion=0, aversion=0, ephemeralOwner=0,
                     dataLength=10, numChildren=0, pzxid=1)


def encode(data):
    return json.dumps(data).encode("utf-8")


# -- enums --------------------------------------------------------------------

def test_state_values_match_the_wire():
    assert {s.value for s in NodeState} == {
        "building", "testing", "ready", "in-use", "used", "hold",
        "deleting", "failed", "init", "aborted", "deleted"}
    assert {s.value for s in RequestState} == {
        "requested", "pending", "fulfilled", "failed"}
    assert {s.value for s in BuildState} == {
        "building", "ready", "deleting", "failed"}
    assert {s.value for s in UploadState} == {
        "uploading", "ready", "deleting", "failed"}
    assert NodeState.IN_USE == "in-use"
    assert NodeState("in-use") is NodeState.IN_USE
    assert str(NodeState.IN_USE) == "in-use"
    assert "%s/%s" % (NodeState.READY, RequestState.PENDING) == "ready/pending"
    assert f"{UploadState.UPLOADING}" == "uploading"
    assert json.dumps(BuildState.READY) == '"ready"'


# -- nodes --------------------------------------------------------------------

@pytest.mark.parametrize("golden", [GOLDEN_NODE, GOLDEN_HELD_NODE,
                                    GOLDEN_AWS_NODE],
                         ids=["ready", "hold", "aws"])
def test_node_golden(golden):
    assert set(golden) == NODE_KEYS
    stat = make_stat(17)
    node = Node.from_bytes(encode(golden), stat=stat, id="0000000007")
    assert node.id == "0000000007"
    assert node.stat is stat
    assert node.mzxid == 17
    assert node.state is NodeState(golden["state"])
    for key, value in golden.items():
        if key not in ("state", "ssh_port"):
            assert getattr(node, key) == value, key
    assert node.to_dict() == golden
    assert json.loads(node.serialize()) == golden
    assert Node.from_dict(node.to_dict(), id="0000000007") == node


def test_node_held_fields():
    node = Node.from_dict(GOLDEN_HELD_NODE, id="0000000001")
    assert node.state is NodeState.HOLD
    assert node.hold_job == "openstack opendev/x tox-py311"
    assert node.hold_expiration == 86400
    assert node.allocated_to == "200-0000000042"


def test_legacy_node_defaults():
    node = Node.from_bytes(encode(LEGACY_NODE), id="0000000003")
    assert node.state is NodeState.IN_USE
    assert node.type == ["ubuntu-xenial"]
    assert node.connection_port == 2022
    assert node.host_keys == []
    assert node.username == "zuul"
    assert node.hold_expiration is None
    assert node.node_properties == {}
    assert node.resources is None
    assert node.cloud is None
    data = node.to_dict()
    assert set(data) == NODE_KEYS
    assert data["type"] == ["ubuntu-xenial"]
    assert data["connection_port"] == 2022
    assert data["ssh_port"] == 2022
    assert data["created_time"] == 1499999000.0
    assert data["username"] == "zuul"


def test_node_port_fallbacks():
    base = {"state": "ready", "state_time": 1.0}
    assert Node.from_dict(base).connection_port == 22
    assert Node.from_dict(dict(base, ssh_port=2200)).connection_port == 2200
    assert Node.from_dict(dict(base, ssh_port=2200, connection_port=5986)) \
        .connection_port == 5986
    # Kubernetes-style pods may store a non-integer port; keep it.
    node = Node.from_dict(dict(base, connection_port="http"))
    assert node.connection_port == "http"
    assert node.to_dict()["ssh_port"] == "http"


def test_node_ssh_port_follows_connection_port():
    node = Node("0000000001")
    node.state = NodeState.READY
    node.connection_port = 5986
    data = node.to_dict()
    assert data["connection_port"] == data["ssh_port"] == 5986


@pytest.mark.parametrize("value,expected", [
    (None, None), (3600, 3600), ("3600", 3600), (12.9, 12),
    ("forever", 0), ([], 0), ({}, 0), (float("inf"), 0), (True, 1), (0, 0),
])
def test_node_hold_expiration_coercion(value, expected):
    node = Node.from_dict({"state": "hold", "state_time": 1.0,
                           "hold_expiration": value})
    assert node.hold_expiration == expected


def test_node_absent_hold_expiration_is_null():
    node = Node.from_dict({"state": "hold", "state_time": 1.0})
    assert node.hold_expiration is None


def test_node_null_collections_read_as_empty():
    node = Node.from_dict({"state": "ready", "state_time": 1.0,
                           "type": None, "host_keys": None,
                           "node_properties": None})
    assert node.type == []
    assert node.host_keys == []
    assert node.node_properties == {}


def test_node_username_kept_when_null():
    node = Node.from_dict({"state": "ready", "state_time": 1.0,
                           "username": None})
    assert node.username is None


def test_new_node_serialization():
    node = Node()
    node.state = NodeState.INIT
    node.provider = "rax-dfw"
    node.pool = "main"
    node.type = ["ubuntu-jammy"]
    data = node.to_dict()
    assert set(data) == NODE_KEYS
    assert data["state"] == "init"
    assert data["created_time"] == node.state_time
    assert data["connection_port"] == data["ssh_port"] == 22
    assert data["host_keys"] == []
    assert data["node_properties"] == {}
    assert data["username"] == "zuul"
    assert data["allocated_to"] is None
    assert "id" not in data and "lock" not in data
    assert "lock_contenders" not in data and "stat" not in data
    assert json.loads(node.serialize()) == data


def test_node_created_time():
    node = Node()
    node.state = NodeState.READY
    node.state_time = 100.0
    node.serialize()
    assert node.created_time == 100.0
    # Not overwritten once set.
    node.state_time = 200.0
    assert node.to_dict()["created_time"] == 100.0
    # Without a state time the current time is used.
    other = Node()
    other.state = NodeState.READY
    other.state_time = None
    before = time.time()
    created = other.to_dict()["created_time"]
    assert before <= created <= time.time()


def test_node_created_time_not_set_by_comparison():
    a = Node("1")
    a.state = NodeState.READY
    b = Node("1")
    b.state = NodeState.READY
    b.state_time = a.state_time
    assert a == b
    assert a.created_time is None


def test_node_to_dict_is_a_copy():
    node = Node.from_dict(GOLDEN_NODE, id="1")
    data = node.to_dict()
    data["type"].append("other")
    data["resources"]["cores"] = 1
    assert node.type == ["ubuntu-jammy"]
    assert node.resources["cores"] == 8
    source = json.loads(json.dumps(GOLDEN_NODE))
    node = Node.from_dict(source, id="1")
    source["type"].append("other")
    assert node.type == ["ubuntu-jammy"]


def test_node_lock_attributes():
    node = Node("0000000001")
    assert node.lock is None
    assert not node.is_locked
    assert node.lock_contenders == set()
    node.lock = object()
    assert node.is_locked
    node.state = NodeState.READY
    data = node.to_dict()
    assert "lock" not in data


def test_node_update_from():
    cached = Node.from_dict(GOLDEN_NODE, id="0000000001")
    cached.stat = make_stat(5)
    lock = object()
    cached.lock = lock
    cached.lock_contenders = {"abc__lock__0000000001"}
    fresh = Node.from_bytes(encode(GOLDEN_HELD_NODE), stat=make_stat(9),
                            id="other")
    cached.update_from(fresh)
    assert cached.id == "0000000001"
    assert cached.lock is lock
    assert cached.lock_contenders == {"abc__lock__0000000001"}
    assert cached.mzxid == 9
    assert cached.state is NodeState.HOLD
    assert cached.state_time == GOLDEN_HELD_NODE["state_time"]
    assert cached.to_dict() == GOLDEN_HELD_NODE
    # The containers are not shared.
    fresh.type.append("x")
    fresh.resources["cores"] = 0
    assert cached.type == ["ubuntu-jammy"]
    assert cached.resources["cores"] == 8
    with pytest.raises(TypeError):
        cached.update_from(NodeRequest.from_dict(ZUUL_REQUEST))


def test_node_update_from_taking_containers():
    """A cache applying a read drops the fresh record afterwards: its
    containers are taken over, not copied."""
    cached = Node.from_dict(GOLDEN_NODE, id="0000000001")
    cached.lock_contenders = {"abc__lock__0000000001"}
    fresh = Node.from_bytes(encode(GOLDEN_HELD_NODE), stat=make_stat(9),
                            id="other")
    cached.update_from(fresh, take=True)
    assert cached.id == "0000000001"
    assert cached.lock_contenders == {"abc__lock__0000000001"}
    assert cached.mzxid == 9 and cached.state is NodeState.HOLD
    assert cached.to_dict() == GOLDEN_HELD_NODE
    assert cached.type is fresh.type
    assert cached.resources is fresh.resources


def test_node_equality_and_repr():
    a = Node.from_dict(GOLDEN_NODE, id="0000000001")
    b = Node.from_dict(GOLDEN_NODE, id="0000000001")
    assert a == b
    b.stat = make_stat(3)
    b.lock_contenders.add("x")
    assert a == b  # stat and lock data do not count
    assert a != Node.from_dict(GOLDEN_NODE, id="0000000002")
    c = Node.from_dict(GOLDEN_NODE, id="0000000001")
    c.comment = "changed"
    assert a != c
    assert a != GOLDEN_NODE
    assert a != NodeRequest("0000000001")
    with pytest.raises(TypeError):
        hash(a)
    text = repr(a)
    assert "Node" in text and "0000000001" in text and "ready" in text
    assert "rax-dfw" in text


def test_node_copy():
    node = Node.from_dict(GOLDEN_NODE, id="0000000001")
    node.stat = make_stat(3)
    node.lock_contenders.add("a__lock__0000000001")
    clone = copy.deepcopy(node)
    assert clone == node
    assert clone.thread_lock is not node.thread_lock
    assert clone.mzxid == 3
    assert clone.lock_contenders == node.lock_contenders
    clone.type.append("x")
    assert node.type == ["ubuntu-jammy"]
    shallow = copy.copy(node)
    assert shallow == node and shallow.type is node.type
    with clone.thread_lock:
        clone.update_from(node)  # re-entrant
    assert clone == node


def test_node_mzxid_default():
    assert Node().mzxid == -1


# -- state setter -------------------------------------------------------------

@pytest.mark.parametrize("cls,ids,valid,invalid", [
    (Node, {}, NodeState.USED, "requested"),
    (NodeRequest, {}, RequestState.PENDING, "ready"),
    (ImageBuild, {"image_name": "img"}, BuildState.DELETING, "uploading"),
    (ImageUpload, {"image_name": "img", "build_id": "b",
                   "provider_name": "p"}, UploadState.UPLOADING, "building"),
])
def test_state_setter(cls, ids, valid, invalid):
    obj = cls(**ids)
    assert obj.state is None and obj.state_time is None
    before = time.time()
    obj.state = valid.value
    assert obj.state is valid
    assert before <= obj.state_time <= time.time()
    # Setting it again stamps the time again.
    obj.state_time = 1234.5
    before = time.time()
    obj.state = valid
    assert obj.state is valid
    assert before <= obj.state_time <= time.time()
    stamped = obj.state_time
    for bad in (invalid, "bogus", None, 3, ["ready"], valid.value.upper()):
        with pytest.raises(TypeError):
            obj.state = bad
    # A refused state changes neither the state nor its time.
    assert obj.state is valid
    assert obj.state_time == stamped


def test_state_stays_an_enum_through_serialization():
    node = Node.from_bytes(encode(GOLDEN_NODE))
    assert isinstance(node.state, NodeState)
    assert node.to_dict()["state"] == "ready"
    assert type(node.to_dict()["state"]) is str


# -- ids ----------------------------------------------------------------------

def test_ids_must_be_strings():
    with pytest.raises(TypeError):
        Node(id=1)
    with pytest.raises(TypeError):
        NodeRequest(id=100)
    with pytest.raises(TypeError):
        ImageBuild(image_name=3)
    with pytest.raises(TypeError):
        ImageBuild("img", id=3)
    with pytest.raises(TypeError):
        ImageUpload("img", "b", 7, "0000000001")
    with pytest.raises(TypeError):
        Image(name=1)
    node = Node()
    with pytest.raises(TypeError):
        node.id = 5
    node.id = "0000000005"
    assert node.id == "0000000005"
    node.id = None
    with pytest.raises(TypeError):
        Node.from_bytes(encode(GOLDEN_NODE), id=1)
    with pytest.raises(TypeError):
        Node.from_dict(GOLDEN_NODE, id=1)


# -- invalid payloads ---------------------------------------------------------

RECORD_CASES = [
    (Node, {"id": "0000000001"}, GOLDEN_NODE),
    (NodeRequest, {"id": "100-0000000001"}, ZUUL_REQUEST),
    (ImageBuild, {"image_name": "img", "id": BUILD_ID}, GOLDEN_BUILD),
    (ImageUpload, {"image_name": "img", "build_id": BUILD_ID,
                   "provider_name": "p", "id": "0000000001"}, GOLDEN_UPLOAD),
]
RECORD_IDS = ["node", "request", "build", "upload"]

BAD_PAYLOADS = [
    b"", b"   ", b"{", b"not json", b"\xff\xfe\x00", b"[]", b"[1, 2]",
    b'"ready"', b"null", b"42", b"true", b"{}",
    b'{"state_time": 1.0}', b'{"state": "bogus", "state_time": 1.0}',
    b'{"state": null, "state_time": 1.0}',
    b'{"state": ["ready"], "state_time": 1.0}',
]


@pytest.mark.parametrize("cls,ids,golden", RECORD_CASES, ids=RECORD_IDS)
@pytest.mark.parametrize("payload", BAD_PAYLOADS)
def test_bad_payloads(cls, ids, golden, payload):
    with pytest.raises(InvalidRecordError):
        cls.from_bytes(payload, **ids)


@pytest.mark.parametrize("cls,ids,golden", RECORD_CASES, ids=RECORD_IDS)
def test_bad_dicts(cls, ids, golden):
    for bad in ([], "x", None, {}, {"state": "bogus"}):
        with pytest.raises(InvalidRecordError):
            cls.from_dict(bad, **ids)
    with pytest.raises(InvalidRecordError):
        cls.from_dict(dict(golden, state_time="yesterday"), **ids)
    with pytest.raises(InvalidRecordError):
        cls.from_dict(dict(golden, state_time=True), **ids)


@pytest.mark.parametrize("cls,ids,golden", RECORD_CASES, ids=RECORD_IDS)
def test_state_from_another_record_type_is_invalid(cls, ids, golden):
    wrong = {Node: "requested", NodeRequest: "in-use",
             ImageBuild: "uploading", ImageUpload: "building"}[cls]
    with pytest.raises(InvalidRecordError):
        cls.from_dict(dict(golden, state=wrong), **ids)


def test_invalid_record_error_is_a_value_error():
    with pytest.raises(ValueError):
        Node.from_bytes(b"[]")


@pytest.mark.parametrize("key,value", [
    ("type", 5), ("type", [1]), ("type", {"a": 1}),
    ("host_keys", "ssh-rsa AAAA"), ("node_properties", []),
    ("node_properties", "spot"), ("resources", [1]), ("resources", 8),
    ("created_time", "today"),
])
def test_node_wrong_field_types(key, value):
    with pytest.raises(InvalidRecordError):
        Node.from_bytes(encode(dict(GOLDEN_NODE, **{key: value})),
                        id="0000000001")


@pytest.mark.parametrize("key,value", [
    ("declined_by", "launcher-1"), ("declined_by", [1]),
    ("node_types", "ubuntu-jammy"), ("nodes", "0000000001"),
    ("nodes", [1]), ("reuse", "yes"), ("reuse", 1),
    ("relative_priority", "1"), ("relative_priority", 1.5),
    ("relative_priority", True), ("created_time", "now"),
])
def test_request_wrong_field_types(key, value):
    with pytest.raises(InvalidRecordError):
        NodeRequest.from_bytes(encode(dict(ZUUL_REQUEST, **{key: value})),
                               id="200-0000000001")


def test_build_wrong_formats_type():
    with pytest.raises(InvalidRecordError):
        ImageBuild.from_dict(dict(GOLDEN_BUILD, formats=5))
    with pytest.raises(InvalidRecordError):
        ImageBuild.from_dict(dict(GOLDEN_BUILD, formats=[1]))


def test_error_names_the_record():
    with pytest.raises(InvalidRecordError, match="0000000042"):
        Node.from_bytes(b'{"state": "bogus"}', id="0000000042")


# -- node requests ------------------------------------------------------------

def test_zuul_request():
    stat = make_stat(40)
    request = NodeRequest.from_bytes(encode(ZUUL_REQUEST), stat=stat,
                                     id="200-0000000042")
    assert request.id == "200-0000000042"
    assert request.state is RequestState.REQUESTED
    assert request.node_types == ["ubuntu-jammy", "ubuntu-jammy", "centos-9"]
    assert request.declined_by == []
    assert request.nodes == []
    assert request.reuse is True
    assert request.relative_priority == 3
    assert request.requestor_data == ZUUL_REQUEST["requestor_data"]
    assert request.tenant_name == "openstack"
    assert request.event_id == ZUUL_REQUEST["event_id"]
    assert request.mzxid == 40
    assert request.priority == ("200", 3, "0000000042")
    data = request.to_dict()
    assert set(data) == REQUEST_KEYS
    assert data == dict(ZUUL_REQUEST, declined_by=[], nodes=[], reuse=True)
    assert NodeRequest.from_dict(data, id="200-0000000042") == request


def test_min_ready_request_golden():
    assert set(MIN_READY_REQUEST) == REQUEST_KEYS
    request = NodeRequest.from_bytes(encode(MIN_READY_REQUEST),
                                     id="900-0000000001")
    assert request.reuse is False
    assert request.nodes == ["0000000007"]
    assert request.state is RequestState.FULFILLED
    assert request.to_dict() == MIN_READY_REQUEST
    assert json.loads(request.serialize()) == MIN_READY_REQUEST


def test_request_null_defaults():
    request = NodeRequest.from_dict({
        "state": "pending", "state_time": 1.0, "declined_by": None,
        "node_types": ["a"], "nodes": None, "reuse": None,
        "relative_priority": None})
    assert request.declined_by == []
    assert request.nodes == []
    assert request.reuse is True
    assert request.relative_priority == 0


def test_request_new():
    request = NodeRequest.new(["a", "b"], "NodePool:min-ready", reuse=False,
                              provider="rax-dfw", tenant_name="t")
    assert request.id is None
    assert request.state is RequestState.REQUESTED
    assert request.state_time is not None
    assert request.node_types == ["a", "b"]
    assert request.requestor == "NodePool:min-ready"
    assert request.reuse is False
    assert request.provider == "rax-dfw"
    assert request.tenant_name == "t"
    assert len(request.event_id) == 32
    int(request.event_id, 16)
    assert NodeRequest.new(["a"]).event_id != request.event_id
    assert NodeRequest.new(["a"], event_id="given").event_id == "given"
    data = request.to_dict()
    assert set(data) == REQUEST_KEYS
    assert data["declined_by"] == [] and data["nodes"] == []


def test_request_priority_ordering():
    def make(request_id, relative=0):
        request = NodeRequest(request_id)
        request.relative_priority = relative
        return request

    requests = [
        make("300-0000000001"),
        make("200-0000000009", 1),
        make("200-0000000010", 0),
        make("100-0000000050", 5),
        make("200-0000000002", 1),
        make("900-0000000000"),
        make("100-0000000051", 0),
    ]
    ordered = [r.id for r in sorted(requests, key=lambda r: r.priority)]
    assert ordered == [
        "100-0000000051", "100-0000000050", "200-0000000010",
        "200-0000000002", "200-0000000009", "300-0000000001",
        "900-0000000000"]
    assert make("100-0000000042", 7).priority == ("100", 7, "0000000042")
    assert NodeRequest().priority == ("", 0, "")
    assert make("odd").priority == ("odd", 0, "")


def test_request_update_from_keeps_lock():
    cached = NodeRequest.from_dict(ZUUL_REQUEST, id="200-0000000001")
    cached.lock = lock = object()
    fresh = NodeRequest.from_bytes(encode(MIN_READY_REQUEST),
                                   stat=make_stat(4), id="x")
    cached.update_from(fresh)
    assert cached.id == "200-0000000001"
    assert cached.lock is lock
    assert cached.to_dict() == MIN_READY_REQUEST
    assert cached.mzxid == 4


# -- image builds -------------------------------------------------------------

def test_build_golden():
    build = ImageBuild.from_bytes(encode(GOLDEN_BUILD), stat=make_stat(2),
                                  image_name="ubuntu-jammy", id=BUILD_ID)
    assert build.image_name == "ubuntu-jammy"
    assert build.id == BUILD_ID
    assert build.state is BuildState.READY
    assert build.formats == ["qcow2", "raw", "vhd"]
    assert build.builder == "nb01.example.com"
    assert build.to_dict() == GOLDEN_BUILD
    assert ImageBuild.from_dict(build.to_dict(), image_name="ubuntu-jammy",
                                id=BUILD_ID) == build


def test_build_formats_sorted_and_optional_keys():
    build = ImageBuild("img", BUILD_ID)
    build.state = BuildState.BUILDING
    data = build.to_dict()
    assert set(data) == {"state", "state_time", "username", "python_path",
                         "shell_type"}
    build.formats = ["vhd", "qcow2", "raw"]
    build.builder = "nb02"
    build.builder_id = "id"
    data = build.to_dict()
    assert data["formats"] == "qcow2,raw,vhd"
    assert data["builder"] == "nb02" and data["builder_id"] == "id"
    assert build.formats == ["vhd", "qcow2", "raw"]
    # Equality does not depend on the in-memory order.
    other = ImageBuild.from_dict(data, image_name="img", id=BUILD_ID)
    assert other.formats == ["qcow2", "raw", "vhd"]
    assert other == build


def test_legacy_build_defaults():
    build = ImageBuild.from_dict({"state": "ready", "state_time": 1.0,
                                  "builder": "nb01"},
                                 image_name="img", id="0000000001")
    assert build.formats == []
    assert build.username == "zuul"
    assert build.python_path == "/usr/bin/python2"
    assert build.shell_type is None
    assert build.builder_id is None
    assert "formats" not in build.to_dict()
    assert ImageBuild.from_dict({"state": "ready", "formats": ""}).formats \
        == []


def test_build_update_from_and_equality():
    a = ImageBuild.from_dict(GOLDEN_BUILD, image_name="img", id=BUILD_ID)
    b = ImageBuild.from_dict(dict(GOLDEN_BUILD, state="deleting"),
                             image_name="img", id="other")
    assert a != b
    a.update_from(b)
    assert a.id == BUILD_ID
    assert a.state is BuildState.DELETING
    assert a != ImageBuild.from_dict(GOLDEN_BUILD, image_name="img2",
                                     id=BUILD_ID)
    assert "img" in repr(a) and BUILD_ID in repr(a)


# -- image uploads ------------------------------------------------------------

def test_upload_golden():
    ids = {"image_name": "ubuntu-jammy", "build_id": BUILD_ID,
           "provider_name": "aws-us-east-1", "id": "0000000001"}
    upload = ImageUpload.from_bytes(encode(GOLDEN_UPLOAD),
                                    stat=make_stat(8), **ids)
    assert upload.image_name == "ubuntu-jammy"
    assert upload.build_id == BUILD_ID
    assert upload.provider_name == "aws-us-east-1"
    assert upload.id == "0000000001"
    assert upload.state is UploadState.READY
    assert upload.external_id == "ami-0123456789abcdef0"
    assert upload.format == "raw"
    data = upload.to_dict()
    assert data == GOLDEN_UPLOAD
    for key in ("image_name", "build_id", "provider_name", "id"):
        assert key not in data
    assert ImageUpload.from_dict(data, **ids) == upload
    assert ImageUpload.from_dict(data, **dict(ids, provider_name="x")) \
        != upload


def test_upload_defaults_and_new():
    upload = ImageUpload.from_dict({"state": "uploading", "state_time": 1.0})
    assert upload.username == "zuul"
    assert upload.python_path == "/usr/bin/python2"
    assert upload.external_id is None
    fresh = ImageUpload("img", BUILD_ID, "p")
    fresh.state = UploadState.UPLOADING
    fresh.format = "qcow2"
    assert set(fresh.to_dict()) == set(GOLDEN_UPLOAD)
    assert ImageUpload.from_dict(fresh.to_dict(), image_name="img",
                                 build_id=BUILD_ID, provider_name="p") == fresh


# -- images -------------------------------------------------------------------

def test_image_container():
    image = Image("ubuntu-jammy")
    assert image.paused is False
    assert image.mzxid == -1
    assert image.serialize() == b""
    assert image.to_dict() == {}
    loaded = Image.from_bytes(b"", stat=make_stat(6), name="ubuntu-jammy")
    assert loaded.name == "ubuntu-jammy"
    assert loaded.mzxid == 6
    assert loaded == image
    image.paused = True
    assert loaded != image
    image.update_from(loaded)
    assert image.paused is True  # pause state comes from the pause child
    assert image.mzxid == 6
    assert Image.from_dict({}, name="x") == Image("x")
    assert "ubuntu-jammy" in repr(image)
    with pytest.raises(TypeError):
        image.update_from(Node())
