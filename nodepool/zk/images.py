# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Image, build and upload records in ZooKeeper: reads, writes and locks.

Used by the builder and the ``nodepool`` CLI, which read ZooKeeper directly;
the launcher reads images through its tree cache instead.  The tree below
``/nodepool/images`` looks like this (the layout nodepool 11 writes)::

    <image>/pause                      present while the image is paused
    <image>/request-build              manual build request
    <image>/builds/lock                image build lock (whole DIB run)
    <image>/builds/<build_id>          ImageBuild, id = uuid4().hex
    <image>/builds/<build_id>/lock     build-id lock
    .../<build_id>/providers/<p>/images/lock        upload lock
    .../<build_id>/providers/<p>/images/<upload_id> ImageUpload, sequential
    .../images/<upload_id>/lock                     upload-number lock

Lock directories share their parents with records, so every listing skips
the child named ``lock``.  Records that cannot be parsed (or have no
payload) are logged and left out of listings rather than failing them: a
single broken znode must not stop the builder or the CLI.

Thread-safety: an :class:`ImageStore` holds no state besides the client
and may be shared by threads.  Its methods block on ZooKeeper round trips
and must not be called from kazoo callbacks.  Unless stated otherwise they
let kazoo's connection errors (``KazooException``) propagate.
"""

import logging
import uuid
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from kazoo.exceptions import NodeExistsError, NoNodeError, NotEmptyError

from nodepool.exceptions import InvalidRecordError
from nodepool.zk import paths
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.image_locks import ImageLocks
from nodepool.zk.invalid import InvalidRecordLog
from nodepool.zk.models import BuildState, ImageBuild, ImageUpload, UploadState

log = logging.getLogger("nodepool.zk.images")


def _state_time(record) -> float:
    # Records from old or foreign writers may lack state_time; they sort
    # as the oldest.
    return record.state_time or 0.0


class ImageStore(ImageLocks):
    """Direct ZooKeeper operations on the image tree.

    The lock operations (``acquire_*_lock``, ``release_lock``,
    ``is_upload_locked``) come from :class:`ImageLocks`.

    :param zk_client: a connected client (the store does not connect).
    """

    def __init__(self, zk_client: ZooKeeperClient):
        self._zk = zk_client
        # Each bad record is logged once per version by this store.
        self.invalid_log = InvalidRecordLog()

    @property
    def _kazoo(self):
        return self._zk.kazoo

    def _children(self, path: str) -> List[str]:
        """Children of ``path`` except lock directories; [] if missing."""
        try:
            children = self._kazoo.get_children(path)
        except NoNodeError:
            return []
        return sorted(c for c in children if c != paths.LOCK)

    # Images -------------------------------------------------------------

    def get_image_names(self) -> List[str]:
        """Names of all images that have a znode, sorted."""
        return self._children(paths.IMAGE_ROOT)

    def is_image_paused(self, image: str) -> bool:
        """Whether the ``pause`` marker of ``image`` exists."""
        return self._kazoo.exists(paths.image_pause_path(image)) is not None

    def pause_image(self, image: str) -> None:
        """Pause builds of ``image`` (idempotent)."""
        try:
            self._kazoo.create(paths.image_pause_path(image), b"",
                               makepath=True)
        except NodeExistsError:
            pass

    def unpause_image(self, image: str) -> None:
        """Resume builds of ``image`` (idempotent)."""
        try:
            self._kazoo.delete(paths.image_pause_path(image))
        except NoNodeError:
            pass

    # Manual build requests ----------------------------------------------

    def submit_build_request(self, image: str) -> None:
        """Ask the builders for a build of ``image`` (idempotent)."""
        self._kazoo.ensure_path(paths.image_build_request_path(image))

    def has_build_request(self, image: str) -> bool:
        """Whether a manual build of ``image`` was requested."""
        return self._kazoo.exists(
            paths.image_build_request_path(image)) is not None

    def remove_build_request(self, image: str) -> None:
        """Drop the manual build request of ``image``, if any.

        The builder calls this only once a build made for the request is
        READY, so a failed build is retried.
        """
        try:
            self._kazoo.delete(paths.image_build_request_path(image))
        except NoNodeError:
            pass

    # Builds -------------------------------------------------------------

    def store_build(self, image: str, build: ImageBuild,
                    build_id: Optional[str] = None) -> str:
        """Write ``build`` and return its id.

        Without ``build_id`` a new record is created under a fresh
        ``uuid4().hex`` (builds are not sequential).  With one, that record
        is overwritten, or created if it does not exist.  ``build.id``,
        ``build.image_name`` and ``build.stat`` are updated.
        """
        data = build.serialize()
        if build_id is None:
            build_id = uuid.uuid4().hex
            path = paths.build_path(image, build_id)
            _, stat = self._kazoo.create(path, data, makepath=True,
                                         include_data=True)
        else:
            path = paths.build_path(image, build_id)
            stat = self._create_or_set(path, data)
        build.id = build_id
        build.image_name = image
        build.stat = stat
        return build_id

    def _create_or_set(self, path: str, data: bytes):
        try:
            return self._kazoo.set(path, data)
        except NoNodeError:
            pass
        try:
            _, stat = self._kazoo.create(path, data, makepath=True,
                                         include_data=True)
        except NodeExistsError:
            # Created meanwhile by somebody else: ours is the newer write.
            return self._kazoo.set(path, data)
        return stat

    def get_build_ids(self, image: str) -> List[str]:
        """Ids of every build znode of ``image`` (valid or not), sorted."""
        return self._children(paths.builds_path(image))

    def get_build(self, image: str, build_id: str) -> Optional[ImageBuild]:
        """The build, or None if it is missing, empty or invalid."""
        path = paths.build_path(image, build_id)
        try:
            data, stat = self._kazoo.get(path)
        except NoNodeError:
            return None
        return self._parse(ImageBuild, path, data, stat,
                           image_name=image, id=build_id)

    def _parse(self, cls, path, data, stat, **ids):
        if not data:
            # E.g. a build znode made only as the parent of a lock.
            log.debug("Ignoring %s without data", path)
            return None
        try:
            return cls.from_bytes(data, stat, **ids)
        except InvalidRecordError as e:
            self.invalid_log.report(log, path, stat, e)
            return None

    def get_builds(self, image: str,
                   states: Optional[Iterable[BuildState]] = None
                   ) -> List[ImageBuild]:
        """Builds of ``image``, optionally only those in ``states``.

        Sorted by id.  Unreadable records are skipped.
        """
        wanted = None if states is None else {BuildState(s) for s in states}
        builds = []
        for build_id in self.get_build_ids(image):
            build = self.get_build(image, build_id)
            if build is None:
                continue
            if wanted is None or build.state in wanted:
                builds.append(build)
        return builds

    def get_most_recent_builds(self, image: str, count: int = 1,
                               state: Optional[BuildState] = BuildState.READY
                               ) -> List[ImageBuild]:
        """Up to ``count`` builds in ``state``, newest ``state_time`` first.

        ``state=None`` considers builds in any state.
        """
        states = None if state is None else [state]
        builds = self.get_builds(image, states)
        builds.sort(key=_state_time, reverse=True)
        return builds[:count]

    def delete_build(self, image: str, build_id: str,
                     force: bool = False) -> bool:
        """Delete a build with everything below it.

        Refuses (returns False) while upload records of the build remain,
        unless ``force``.  Returns True when the build is gone, including
        when it did not exist.
        """
        if not force:
            for provider in self.get_build_providers(image, build_id):
                if self.get_upload_ids(image, build_id, provider):
                    return False
        try:
            self._kazoo.delete(paths.build_path(image, build_id),
                               recursive=True)
        except NoNodeError:
            pass
        except NotEmptyError:
            # Kazoo deletes depth first; a lock contender or upload created
            # meanwhile makes that fail.  Try again next time.
            return False
        return True

    # Uploads ------------------------------------------------------------

    def store_upload(self, image: str, build_id: str, provider: str,
                     upload: ImageUpload,
                     upload_id: Optional[str] = None) -> str:
        """Write ``upload`` and return its id.

        Without ``upload_id`` a new sequential record is created below
        ``.../providers/<provider>/images/``; its id is the 10-digit
        sequence.  With one, that record is overwritten (or created).
        ``upload``'s identifiers and ``stat`` are updated.
        """
        data = upload.serialize()
        if upload_id is None:
            prefix = paths.uploads_path(image, build_id, provider) + "/"
            path, stat = self._kazoo.create(prefix, data, sequence=True,
                                            makepath=True, include_data=True)
            upload_id = path.rpartition("/")[2]
        else:
            stat = self._create_or_set(
                paths.upload_path(image, build_id, provider, upload_id),
                data)
        upload.image_name = image
        upload.build_id = build_id
        upload.provider_name = provider
        upload.id = upload_id
        upload.stat = stat
        return upload_id

    def get_build_providers(self, image: str, build_id: str) -> List[str]:
        """Providers that have an upload tree under the build, sorted."""
        return self._children(paths.build_providers_path(image, build_id))

    def get_upload_ids(self, image: str, build_id: str,
                       provider: str) -> List[str]:
        """Ids of every upload znode (valid or not), sorted."""
        return self._children(paths.uploads_path(image, build_id, provider))

    def get_upload(self, image: str, build_id: str, provider: str,
                   upload_id: str) -> Optional[ImageUpload]:
        """The upload, or None if it is missing, empty or invalid."""
        path = paths.upload_path(image, build_id, provider, upload_id)
        try:
            data, stat = self._kazoo.get(path)
        except NoNodeError:
            return None
        return self._parse(ImageUpload, path, data, stat, image_name=image,
                           build_id=build_id, provider_name=provider,
                           id=upload_id)

    def get_uploads(self, image: str, build_id: str, provider: str,
                    states: Optional[Iterable[UploadState]] = None
                    ) -> List[ImageUpload]:
        """Uploads of a build to ``provider``, optionally filtered.

        Sorted by id.  Unreadable records are skipped.
        """
        wanted = None if states is None else {UploadState(s) for s in states}
        uploads = []
        for upload_id in self.get_upload_ids(image, build_id, provider):
            upload = self.get_upload(image, build_id, provider, upload_id)
            if upload is None:
                continue
            if wanted is None or upload.state in wanted:
                uploads.append(upload)
        return uploads

    def delete_upload(self, image: str, build_id: str, provider: str,
                      upload_id: str) -> bool:
        """Delete an upload record and its lock directory.

        Returns True when it is gone (also if it never existed), False if
        a lock contender appeared while deleting.
        """
        try:
            self._kazoo.delete(
                paths.upload_path(image, build_id, provider, upload_id),
                recursive=True)
        except NoNodeError:
            pass
        except NotEmptyError:
            return False
        return True

    # Export and import --------------------------------------------------

    def export_image_data(self) -> Dict[str, str]:
        """Snapshot of the image tree for ``nodepool export-image-data``.

        Returns ``{znode path: payload}``: the ``pause`` marker (``""``),
        every build and every upload znode, payloads decoded as UTF-8
        (kept verbatim, even if not valid records).  Locks and build
        requests are not exported.  Znodes deleted while walking are
        skipped.  The walk is not atomic.
        """
        data: Dict[str, str] = {}

        def grab(path: str) -> bool:
            try:
                payload, _ = self._kazoo.get(path)
            except NoNodeError:
                return False
            data[path] = (payload or b"").decode("utf8")
            return True

        for image in self.get_image_names():
            if self.is_image_paused(image):
                data[paths.image_pause_path(image)] = ""
            for build_id in self.get_build_ids(image):
                if not grab(paths.build_path(image, build_id)):
                    continue
                for provider in self.get_build_providers(image, build_id):
                    for upload_id in self.get_upload_ids(image, build_id,
                                                         provider):
                        grab(paths.upload_path(image, build_id, provider,
                                               upload_id))
        return data

    def import_image_data(self, data: Mapping[str, str]) -> None:
        """Write data made by :meth:`export_image_data` into this tree.

        Every path is created, or overwritten if it exists.  Before that,
        the sequence counter of each upload directory is advanced past the
        highest imported upload id, so uploads created afterwards cannot
        collide with imported ones.

        :raises ValueError: before writing anything, if a path is not an
            image, pause, build or upload path or a payload is not a str.
        """
        uploads: Dict[str, List[Tuple[int, str]]] = {}
        for path, payload in data.items():
            if not isinstance(payload, str):
                raise ValueError("payload of %s is not a string" % path)
            key = paths.parse_image_path(path)
            if key is None and paths.parse_image_pause_path(path) is None:
                raise ValueError("not an image data path: %r" % path)
            if key is not None and len(key) == 4:
                parent, _, upload_id = path.rpartition("/")
                if upload_id.isdigit():
                    uploads.setdefault(parent, []).append(
                        (int(upload_id), path))
        for parent, entries in sorted(uploads.items()):
            self._advance_sequence(parent, max(n for n, _ in entries),
                                   {p for _, p in entries})
        # Parents first, so a build's payload is not written after an
        # upload below it created the build znode empty.
        for path in sorted(data, key=lambda p: (p.count("/"), p)):
            self._create_or_set(path, data[path].encode("utf8"))

    def _advance_sequence(self, parent: str, highest: int,
                          keep: Sequence[str]) -> None:
        """Make the next sequential child of ``parent`` exceed ``highest``.

        ZooKeeper derives the suffix from the parent's child counter, so we
        create (and delete again, unless imported at that very path) empty
        sequential children until the counter passed ``highest``.
        """
        self._kazoo.ensure_path(parent)
        while True:
            path = self._kazoo.create(parent + "/", b"", sequence=True)
            number = int(path.rpartition("/")[2])
            if path not in keep:
                self._kazoo.delete(path)
            if number >= highest:
                return

    # Status reads and provider erasure (the ``nodepool`` CLI) -----------

    def _ctime(self, path: str) -> Optional[int]:
        stat = self._kazoo.exists(path)
        return None if stat is None else stat.ctime

    def build_request_ctime(self, image: str) -> Optional[int]:
        """When the manual build request of ``image`` was made (epoch
        milliseconds, ZooKeeper's ctime); None without one."""
        return self._ctime(paths.image_build_request_path(image))

    def build_ctimes(self, image: str) -> Dict[str, int]:
        """Build id -> creation time of its znode (epoch milliseconds);
        builds vanishing meanwhile are left out."""
        ctimes = {}
        for build_id in self._children(paths.builds_path(image)):
            ctime = self._ctime(paths.build_path(image, build_id))
            if ctime is not None:
                ctimes[build_id] = ctime
        return ctimes

    def delete_build_provider(self, image: str, build_id: str,
                              provider: str) -> None:
        """Remove everything of ``provider`` below a build: its upload
        records and their locks (``nodepool erase``).  Nothing happens if
        there is none; other errors propagate."""
        try:
            self._kazoo.delete(
                paths.build_provider_path(image, build_id, provider),
                recursive=True)
        except NoNodeError:
            pass
