# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Tree caches of the launcher's records: nodes, requests and images.

Each is a :class:`~nodepool.zk.treecache.TreeCache` (the generic event and
playback machinery, re-exported here) that knows which paths of its subtree
hold records, how to read them, and which other paths (lock contenders,
pause flags) it reacts to.
"""

import collections
import threading
from typing import Iterable, Optional

from kazoo.protocol.states import EventType

from nodepool.zk import models, paths
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.treecache import (  # noqa: F401  (re-exported)
    QUEUE_WARNING_INTERVAL, QUEUE_WARNING_SIZE, RESYNC_RETRY, SYNTHETIC,
    InvalidEntry, Listener, TreeCache)
from nodepool.zk.usage import NodeUsageIndex


class NodeCache(TreeCache):
    """Cache of ``/nodepool/nodes``; tracks lock contenders per node.

    The :class:`~nodepool.zk.nodes.NodeStore` writing through this cache
    reports its own writes (:meth:`written`) and deletions
    (:meth:`removed`), so that this process sees them at once instead of
    when their watch events are played back: quota counts a node the
    moment its record exists, and a deleted node stops counting the
    moment its record is gone.  Node ids are never reused, so events for
    a node removed here that are still queued cannot bring it back.
    """

    name = "NodeCache"

    #: How many removed node ids are remembered to drop their late events
    #: (a removal's own DELETED event forgets it sooner).
    REMOVED_MEMORY = 4096

    def __init__(self, client: ZooKeeperClient, **options):
        super().__init__(client, paths.NODE_ROOT, **options)
        self.stats_event = threading.Event()
        self._lock_listeners: list = []
        # Serialises building/updating cached objects between the playback
        # thread and writers, so one key never gets two objects.
        self._store_lock = threading.RLock()
        self._removed: collections.OrderedDict = collections.OrderedDict()
        # Kept under _store_lock, so the last update of a node is made
        # from its latest state.
        self._usage = NodeUsageIndex()

    # Write-through ------------------------------------------------------

    def written(self, node_id: str, data: bytes, stat) -> None:
        """A record of ours was stored with ``data`` at ``stat``."""
        key = (node_id,)
        with self._store_lock:
            if key in self._removed:
                return
            self.written_record(key, data, stat)

    def removed(self, node_id: str) -> None:
        """A record of ours was deleted."""
        key = (node_id,)
        with self._store_lock:
            self._removed[key] = None
            while len(self._removed) > self.REMOVED_MEMORY:
                self._removed.popitem(last=False)
            with self._objects_lock:
                self._objects.pop(key, None)
                self._invalid.pop(key, None)
            self._usage.update(node_id, None)

    def has_object(self, key, data, exists):
        return super().has_object(key, data, exists) \
            and key not in self._removed

    def _store(self, key, data, stat):
        with self._store_lock:
            obj = super()._store(key, data, stat)
            self._usage.update(key[0], obj)
            return obj

    def add_lock_listener(self, listener) -> None:
        """Call ``listener(node, contender, locked)`` when a lock contender
        of a cached node appears (``locked`` True) or goes away.

        Lock traffic updates no node data, so plain listeners never hear
        of it; this is how the launcher learns that Zuul let go of a used
        node.  Runs on the playback thread: it must be quick.
        """
        self._lock_listeners.append(listener)

    def parse_path(self, path):
        return paths.parse_node_path(path)

    def make_object(self, key, data, stat):
        return models.Node.from_bytes(data, stat=stat, id=key[0])

    def is_hook_path(self, path):
        return paths.parse_node_lock_path(path) is not None

    def listing_paths(self, path):
        # A node's only child is its lock directory, and contenders are
        # leaves: one listing per node instead of two.
        if paths.parse_node_path(path) is not None:
            return (path + "/" + paths.LOCK,)
        if paths.parse_node_lock_path(path) is not None:
            return ()
        return (path,)

    def pre_hook(self, path, key, exists, event):
        parsed = paths.parse_node_lock_path(path)
        if parsed is None:
            return
        node_id, contender = parsed
        node = self.get_object((node_id,))
        if node is None:
            return
        if exists:
            node.lock_contenders.add(contender)
        else:
            node.lock_contenders.discard(contender)
        for listener in self._lock_listeners:
            try:
                listener(node, contender, exists)
            except Exception:
                self.log.exception("Lock listener failed")

    def _play(self, event, future, key, with_data):
        super()._play(event, future, key, with_data)
        if key is not None:
            with self._store_lock:
                if event.type == EventType.DELETED:
                    self._removed.pop(key, None)
                self._usage.update(key[0], self.get_object(key))
        self.stats_event.set()

    def get(self, node_id: str) -> Optional[models.Node]:
        return self.get_object((node_id,))

    def values(self) -> list:
        return self.objects()

    def usage(self, provider: str) -> list:
        """What the cached nodes of ``provider`` use, as
        :class:`~nodepool.zk.usage.UsageGroup` (nodes of one pool that
        use the same)."""
        return self._usage.groups(provider)

    def ids(self) -> list:
        """Ids of every node znode with data, readable or not.

        An unreadable record still names a node somebody may be using, so
        its cloud resources are not leaked ones: the leak cleanup and the
        quota accounting must count it as known.
        """
        with self._objects_lock:
            return [k[0] for k in self._objects] + \
                [k[0] for k in self._invalid if k not in self._objects]


class RequestCache(TreeCache):
    """Cache of ``/nodepool/requests``."""

    name = "RequestCache"

    def __init__(self, client: ZooKeeperClient, **options):
        super().__init__(client, paths.REQUEST_ROOT, **options)

    def parse_path(self, path):
        return paths.parse_request_path(path)

    def listing_paths(self, path):
        # Requests are leaves (their locks live in requests-lock): the
        # walk lists none of them.
        if paths.parse_request_path(path) is not None:
            return ()
        return (path,)

    def make_object(self, key, data, stat):
        return models.NodeRequest.from_bytes(data, stat=stat, id=key[0])

    def has_object(self, key, data, exists):
        # Requests are created with their payload in one operation, so an
        # empty request znode is garbage too and must be failed like one.
        return exists

    def get(self, request_id: str) -> Optional[models.NodeRequest]:
        return self.get_object((request_id,))

    def values(self) -> list:
        return self.objects()

    def ids(self) -> list:
        return [k[0] for k in self.keys()]


class ImageCache(TreeCache):
    """Cache of ``/nodepool/images``: images, builds and uploads.

    Keys: ``(image,)`` → :class:`Image` (its ``pause`` child toggles
    ``paused``), ``(image, build)`` → :class:`ImageBuild`,
    ``(image, build, provider, upload)`` → :class:`ImageUpload`.
    """

    name = "ImageCache"

    def __init__(self, client: ZooKeeperClient, **options):
        super().__init__(client, paths.IMAGE_ROOT, **options)
        # Pause flags by image name; a flag may be seen before its image.
        self._paused: dict[str, bool] = {}

    def parse_path(self, path):
        return paths.parse_image_path(path)

    def has_object(self, key, data, exists):
        if len(key) == 1:
            return exists  # image containers carry no payload
        return super().has_object(key, data, exists)

    def make_object(self, key, data, stat):
        if len(key) == 1:
            image = models.Image(key[0])
            image.stat = stat
            image.paused = self._paused.get(key[0], False)
            return image
        if len(key) == 2:
            return models.ImageBuild.from_bytes(
                data, stat=stat, image_name=key[0], id=key[1])
        return models.ImageUpload.from_bytes(
            data, stat=stat, image_name=key[0], build_id=key[1],
            provider_name=key[2], id=key[3])

    def is_hook_path(self, path):
        return paths.parse_image_pause_path(path) is not None

    def pre_hook(self, path, key, exists, event):
        image_name = paths.parse_image_pause_path(path)
        if image_name is None:
            return
        self._paused[image_name] = exists
        image = self.get_object((image_name,))
        if image is not None:
            image.paused = exists

    def object_path(self, key):
        if len(key) == 1:
            return paths.image_path(*key)
        if len(key) == 2:
            return paths.build_path(*key)
        return paths.upload_path(*key)

    def get_image(self, name: str) -> Optional[models.Image]:
        return self.get_object((name,))

    def get_build(self, image: str, build_id: str):
        return self.get_object((image, build_id))

    def get_upload(self, image, build_id, provider, upload_id):
        return self.get_object((image, build_id, provider, upload_id))

    def images(self) -> list:
        return [o for k, o in self._items() if len(k) == 1]

    def builds(self, image: Optional[str] = None) -> list:
        return [o for k, o in self._items()
                if len(k) == 2 and (image is None or k[0] == image)]

    def uploads(self, image: Optional[str] = None,
                build_id: Optional[str] = None,
                provider: Optional[str] = None) -> list:
        return [o for k, o in self._items()
                if len(k) == 4 and (image is None or k[0] == image)
                and (build_id is None or k[1] == build_id)
                and (provider is None or k[2] == provider)]

    def _items(self) -> Iterable:
        with self._objects_lock:
            return list(self._objects.items())
