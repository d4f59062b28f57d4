# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Opt-in x509 ACLs (``zookeeper-tls.acl``) against a real ZooKeeper.

The server authenticates TLS clients by their certificate subject
(``authProvider.x509``, see tests/fixtures/zkserver.py).  Znodes written
with ACLs on are open to nodepool's own certificate and the listed
identities only; a client with another certificate from the same CA can
neither read nor write them.  A private server is used: the shared one's
per-test chroot cleanup could not delete such znodes.
"""

import pytest
from kazoo.exceptions import NoAuthError
from kazoo.security import ACL, Id, Permissions

from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.models import Node, NodeState
from nodepool.zk.nodes import NodeStore
from nodepool.zk.tls import x509_identity
from tests.fixtures import zkserver

ZUUL = "CN=zuul,O=Example"


@pytest.fixture
def acl_server(own_zk_server, zk_certs, tmp_path):
    own_zk_server.start()
    directory = str(tmp_path / "identities")
    own_zk_server.identities = {
        name: zkserver.make_signed_cert(zk_certs, directory, name, subject,
                                        alt_names="", usage="clientAuth")
        for name, subject in (("other", "/CN=other"),
                              ("zuul", "/O=Example/CN=zuul"))}
    return own_zk_server


@pytest.fixture
def connect(acl_server, zk_certs):
    clients = []

    def connect(identity=None, acl=None):
        cert, key = (zk_certs["client.crt"], zk_certs["client.key"])
        if identity is not None:
            cert, key = acl_server.identities[identity]
        client = ZooKeeperClient(acl_server.tls_hosts, tls_ca=zk_certs[
            "ca.pem"], tls_cert=cert, tls_key=key, acl=acl)
        client.connect()
        clients.append(client)
        return client
    yield connect
    for client in clients:
        client.disconnect()


def _new_node(client):
    node = Node()
    node.state = NodeState.READY
    node.provider = "cloud"
    node.type = ["small"]
    NodeStore(client).store_node(node)
    return node


def test_identity_matches_zookeeper_view(acl_server, zk_certs):
    assert x509_identity(zk_certs["client.crt"]) == "CN=client"
    cert, _ = acl_server.identities["zuul"]
    # Most specific part first, as Java's X500Principal names it.
    assert x509_identity(cert) == ZUUL


def test_other_certificate_cannot_touch_acl_znodes(connect):
    nodepool = connect(acl=[ZUUL])
    node = _new_node(nodepool)
    path = "/nodepool/nodes/" + node.id
    acl, _ = nodepool.kazoo.get_acls(path)
    assert acl == [ACL(Permissions.ALL, Id("x509", "CN=client")),
                   ACL(Permissions.READ | Permissions.WRITE
                       | Permissions.CREATE | Permissions.DELETE,
                       Id("x509", ZUUL))]
    # Parents created on the way (makepath) carry the ACL as well.
    assert nodepool.kazoo.get_acls("/nodepool")[0] == acl

    other = connect("other")
    with pytest.raises(NoAuthError):
        other.kazoo.get(path)
    with pytest.raises(NoAuthError):
        other.kazoo.set(path, b"{}")
    with pytest.raises(NoAuthError):
        other.kazoo.create(path + "/lock/intruder", makepath=True)
    with pytest.raises(NoAuthError):
        other.kazoo.delete(path)
    with pytest.raises(NoAuthError):
        other.kazoo.create("/nodepool/nodes/9999999999")

    # A listed identity (Zuul) locks and updates the node as usual, but
    # cannot change who may.
    zuul = connect("zuul")
    store = NodeStore(zuul)
    node = store.get_node(node.id, cached=False)
    store.lock_node(node)
    node.state = NodeState.IN_USE
    store.store_node(node)
    store.unlock_node(node)
    with pytest.raises(NoAuthError):
        zuul.kazoo.set_acls(
            path, [ACL(Permissions.ALL, Id("world", "anyone"))])
    assert NodeStore(nodepool).get_node(
        node.id, cached=False).state == NodeState.IN_USE


def test_without_acl_znodes_stay_open(connect):
    # The default, as in nodepool 11: anyone who can connect may write.
    nodepool = connect()
    node = _new_node(nodepool)
    path = "/nodepool/nodes/" + node.id
    other = connect("other")
    other.kazoo.set(path, b"{}")
    assert nodepool.kazoo.get(path)[0] == b"{}"
