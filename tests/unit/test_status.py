# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Rows and tables of nodepool.status (keys as in doc/source/webapp.rst)."""

import json

import pytest

from nodepool import status
from nodepool.zk.models import (ImageBuild, ImageUpload, Node, NodeRequest,
                                NodeState)

NOW = 1_700_000_000.0


def make_node(node_id="0000000001", **attrs):
    node = Node(node_id)
    node.state = NodeState.READY
    node.state_time = NOW - (2 * 86400 + 3 * 3600 + 4 * 60 + 5)
    node.provider = "cloud1"
    node.pool = "main"
    node.type = ["small", "fast"]
    node.external_id = "srv-1"
    node.public_ipv4 = "203.0.113.5"
    node.public_ipv6 = "2001:db8::5"
    node.private_ipv4 = "10.0.0.5"
    node.az = "az1"
    node.launcher = "host-PoolWorker.cloud1-main-abc"
    for key, value in attrs.items():
        setattr(node, key, value)
    return node


def table_lines(text):
    return [line for line in text.splitlines() if line.startswith("|")]


def cells(line):
    return [c.strip() for c in line.strip("|").split("|")]


def test_format_age():
    assert status.format_age(NOW - 59, NOW) == "00:00:00:59"
    assert status.format_age(NOW - (3 * 86400 + 3661), NOW) == "03:01:01:01"
    assert status.format_age(NOW + 100, NOW) == "00:00:00:00"
    assert status.format_age(None, NOW) == ""


def test_node_list_keys_and_values():
    node = make_node(connection_port=2222, comment="why",
                     user_data={"a": 1})
    node.lock_contenders = {"abc__lock__0000000001"}
    headers, rows = status.node_list([node], now=NOW)
    assert [c.key for c in headers] == [
        "id", "provider", "label", "server_id", "public_ipv4", "ipv6",
        "state", "age", "locked", "pool", "hostname", "private_ipv4", "AZ",
        "username", "connection_port", "launcher", "allocated_to",
        "hold_job", "comment", "user_data", "driver_data"]
    assert [c.title for c in headers] == [
        "ID", "Provider", "Label", "Server ID", "Public IPv4", "IPv6",
        "State", "Age", "Locked", "Pool", "Hostname", "Private IPv4", "AZ",
        "Username", "Port", "Launcher", "Allocated To", "Hold Job",
        "Comment", "User Data", "Driver Data"]
    row = rows[0]
    assert list(row) == [c.key for c in headers]
    assert row["label"] == ["small", "fast"]
    assert row["server_id"] == "srv-1"
    assert row["ipv6"] == "2001:db8::5"
    assert row["state"] == "ready" and type(row["state"]) is str
    assert row["age"] == "02:03:04:05"
    assert row["locked"] == "locked"
    assert row["AZ"] == "az1"
    assert row["connection_port"] == 2222
    assert row["username"] == "zuul"
    json.dumps(rows)  # JSON-ready


def test_node_list_unlocked_redacted_and_filter():
    a = make_node("0000000001", connection_port="secret-token")
    b = make_node("0000000002")
    headers, rows = status.node_list([a, b], node_id="0000000002", now=NOW)
    assert [r["id"] for r in rows] == ["0000000002"]
    assert rows[0]["locked"] == "unlocked"
    _, rows = status.node_list([a], now=NOW)
    assert rows[0]["connection_port"] == "redacted"
    assert status.node_list([a], node_id="nope")[1] == []


def test_node_table_short_and_detail():
    headers, rows = status.node_list([make_node()], now=NOW)
    short = table_lines(status.render_table(
        headers, rows, status.NODE_LIST_FIELDS, now=NOW))
    assert cells(short[0]) == ["ID", "Provider", "Label", "Server ID",
                               "Public IPv4", "IPv6", "State", "Age",
                               "Locked"]
    assert cells(short[1]) == ["0000000001", "cloud1", "small,fast",
                               "srv-1", "203.0.113.5", "2001:db8::5",
                               "ready", "02:03:04:05", "unlocked"]
    detail = table_lines(status.render_table(headers, rows, now=NOW))
    assert len(cells(detail[0])) == 21
    row = dict(zip(cells(detail[0]), cells(detail[1])))
    assert row["Hostname"] == ""          # None prints empty
    assert row["Port"] == "22"
    assert row["Pool"] == "main"


def test_render_table_left_aligned_fields_keep_header_order():
    headers = [status.Column("a", "A"), status.Column("b", "B"),
               status.Column("c", "C")]
    rows = [{"a": "long value", "b": None, "c": [1, 2]},
            {"a": "x", "b": "y", "c": []}]
    text = status.render_table(headers, rows, fields=["c", "a", "zzz"])
    lines = table_lines(text)
    assert cells(lines[0]) == ["A", "C"]
    assert cells(lines[1]) == ["long value", "1,2"]
    # Left aligned: the short value is followed by padding.
    assert "| x          |" in lines[2]
    assert status.render_table(headers, rows, fields=[]) == \
        status.render_table(headers, rows)


def test_request_list():
    request = NodeRequest.new(["small", "small"], "zuul01",
                              relative_priority=3, event_id="ev1")
    request.id = "200-0000000007"
    request.nodes = ["0000000001", "0000000002"]
    request.declined_by = ["l1"]
    headers, rows = status.request_list([request])
    assert [c.key for c in headers] == [
        "id", "relative_priority", "state", "requestor", "node_types",
        "nodes", "declined_by", "event_id"]
    assert [c.title for c in headers] == [
        "Request ID", "Priority", "State", "Requestor", "Node Types",
        "Nodes", "Declined By", "Event ID"]
    assert rows == [{
        "id": "200-0000000007", "relative_priority": 3,
        "state": "requested", "requestor": "zuul01",
        "node_types": ["small", "small"],
        "nodes": ["0000000001", "0000000002"], "declined_by": ["l1"],
        "event_id": "ev1"}]
    line = table_lines(status.render_table(headers, rows))[1]
    assert cells(line)[4:6] == ["small,small", "0000000001,0000000002"]


def test_image_list():
    upload = ImageUpload("ubuntu", "b" * 32, "cloud1", "0000000001")
    upload.state = "ready"
    upload.state_time = NOW - 61.7
    upload.external_id = "img-1"
    upload.external_name = "ubuntu-123"
    headers, rows = status.image_list([upload])
    assert [c.key for c in headers] == [
        "id", "upload_id", "provider", "image", "external_name",
        "external_id", "state", "age"]
    assert [c.title for c in headers] == [
        "Build ID", "Upload ID", "Provider", "Image", "Provider Image Name",
        "Provider Image ID", "State", "Age"]
    assert rows[0]["id"] == "b" * 32
    assert rows[0]["age"] == int(NOW - 61.7)
    assert rows[0]["state"] == "ready"
    line = table_lines(status.render_table(headers, rows, now=NOW))[1]
    assert cells(line)[-1] == "00:00:01:02"


def test_dib_image_list_paused():
    a = ImageBuild("ubuntu", "0123")
    a.state = "ready"
    a.state_time = NOW - 3600
    a.builder = "builder01"
    a.formats = ["qcow2", "raw"]
    b = ImageBuild("centos", "4567")
    b.state = "building"
    b.state_time = NOW
    headers, rows = status.dib_image_list([a, b], paused={"ubuntu"})
    assert [c.key for c in headers] == ["id", "image", "builder",
                                        "formats", "state", "age"]
    assert [c.title for c in headers] == ["ID", "Image", "Builder",
                                          "Formats", "State", "Age"]
    assert rows[0] == {"id": "ubuntu-0123", "image": "ubuntu",
                       "builder": "builder01", "formats": ["qcow2", "raw"],
                       "state": "paused", "age": int(NOW - 3600)}
    assert rows[1]["state"] == "building"
    lines = table_lines(status.render_table(headers, rows, now=NOW))
    assert cells(lines[1]) == ["ubuntu-0123", "ubuntu", "builder01",
                               "qcow2,raw", "paused", "00:01:00:00"]
    assert cells(lines[2])[2:4] == ["", ""]


def test_split_build_label():
    assert status.split_build_label("my-image-0123") == ("my-image", "0123")
    with pytest.raises(ValueError):
        status.split_build_label("noseparator")


def test_image_status():
    statuses = [status.ImageStatus("a", True, "pending",
                                   int((NOW - 120) * 1000)),
                status.ImageStatus("b")]
    headers, rows = status.image_status(statuses)
    assert [c.key for c in headers] == ["image", "paused", "build_request",
                                        "build_request_age"]
    assert [c.title for c in headers] == ["Image", "Paused",
                                          "Build Request",
                                          "Build Request Age"]
    assert rows[1] == {"image": "b", "paused": False, "build_request": None,
                       "build_request_age": None}
    lines = table_lines(status.render_table(headers, rows, now=NOW))
    assert cells(lines[1]) == ["a", "True", "pending", "00:00:02:00"]
    assert cells(lines[2]) == ["b", "False", "", ""]


def test_label_list():
    class Pool:
        def __init__(self, labels):
            self.supported_labels = labels
    headers, rows = status.label_list([Pool(("b", "a")), Pool(["a", "c"]),
                                       Pool(None)])
    assert [(c.key, c.title) for c in headers] == [("label", "Label")]
    assert rows == [{"label": "a"}, {"label": "b"}, {"label": "c"}]
