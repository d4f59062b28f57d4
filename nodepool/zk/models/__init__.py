# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Records stored in ZooKeeper and their JSON wire format.

The JSON written and read here is the contract with nodepool 11 and Zuul:
the key names, which keys are always written, and the defaults applied when
a key is missing on read all follow what nodepool 11 writes and reads
(doc/source/zookeeper.rst describes the tree).  Python attribute names equal the JSON keys.

Identifiers (node id, request id, image name, build id, provider name,
upload id) come from the znode path and are never part of the payload.

Every record keeps the :class:`kazoo.protocol.states.ZnodeStat` it was read
with in ``stat`` (``None`` for records not read from ZooKeeper) so that
caches can tell newer data from older (:attr:`Record.mzxid`).

Records are mutable and therefore unhashable; equality compares the class,
the identifiers and the serialized fields.

The package has one module per record type (``node``, ``request``,
``image``), the shared base (``base``) and the state enums (``states``);
import the names from here.
"""

from nodepool.zk.models.base import (DEFAULT_CONNECTION_PORT,
                                     DEFAULT_PYTHON_PATH, DEFAULT_USERNAME,
                                     Record)
from nodepool.zk.models.image import Image, ImageBuild, ImageUpload
from nodepool.zk.models.node import Node
from nodepool.zk.models.request import NodeRequest
from nodepool.zk.models.states import (BuildState, NodeState, RequestState,
                                       UploadState)

__all__ = [
    "BuildState", "DEFAULT_CONNECTION_PORT", "DEFAULT_PYTHON_PATH",
    "DEFAULT_USERNAME", "Image", "ImageBuild", "ImageUpload", "Node",
    "NodeRequest", "NodeState", "Record", "RequestState", "UploadState",
]
