# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Locks of the image tree, shared by builders and the ``nodepool`` CLI."""

from typing import Optional

from kazoo.recipe.lock import Lock

from nodepool.exceptions import LockError
from nodepool.zk import locks
from nodepool.zk import paths


class ImageLocks:
    """The lock operations of :class:`~nodepool.zk.images.ImageStore`.

    A base class of the store, kept apart because locking is a concern of
    its own; subclasses provide ``_kazoo`` (the connected kazoo client).

    Every ``acquire_*`` method returns the kazoo Lock, to be released with
    :meth:`release_lock`.  With ``blocking=False`` a busy lock raises
    LockError at once; a blocking attempt with a timeout raises
    TimeoutException (a LockError).
    """

    def acquire_image_build_lock(self, image: str, blocking: bool = True,
                                 timeout: Optional[float] = None,
                                 identifier: Optional[str] = None) -> Lock:
        """Take the image build lock, held for a whole DIB run."""
        return locks.acquire_lock(self._kazoo, paths.build_lock_path(image),
                                  blocking=blocking, timeout=timeout,
                                  identifier=identifier)

    def acquire_build_id_lock(self, image: str, build_id: str,
                              blocking: bool = True,
                              timeout: Optional[float] = None,
                              identifier: Optional[str] = None) -> Lock:
        """Take the lock of one build (used to mark it ``deleting``).

        :raises LockError: also if the build does not exist; locking would
            otherwise create an empty build znode as the lock's parent.
        """
        if self._kazoo.exists(paths.build_path(image, build_id)) is None:
            raise LockError("build %s of %s does not exist"
                            % (build_id, image))
        return locks.acquire_lock(
            self._kazoo, paths.build_id_lock_path(image, build_id),
            blocking=blocking, timeout=timeout, identifier=identifier)

    def acquire_upload_lock(self, image: str, build_id: str, provider: str,
                            blocking: bool = True,
                            timeout: Optional[float] = None,
                            identifier: Optional[str] = None) -> Lock:
        """Take the upload lock (one uploader per build and provider).

        Creating the lock directory advances the sequence counter of its
        parent, which is why the first upload id is normally
        ``0000000001``.
        """
        return locks.acquire_lock(
            self._kazoo, paths.upload_lock_path(image, build_id, provider),
            blocking=blocking, timeout=timeout, identifier=identifier)

    def acquire_upload_number_lock(self, image: str, build_id: str,
                                   provider: str, upload_id: str,
                                   blocking: bool = True,
                                   timeout: Optional[float] = None,
                                   identifier: Optional[str] = None
                                   ) -> Lock:
        """Take the lock of one upload record (used by cleanup).

        :raises LockError: also if the upload does not exist.
        """
        path = paths.upload_path(image, build_id, provider, upload_id)
        if self._kazoo.exists(path) is None:
            raise LockError("upload %s does not exist" % path)
        return locks.acquire_lock(
            self._kazoo,
            paths.upload_number_lock_path(image, build_id, provider,
                                          upload_id),
            blocking=blocking, timeout=timeout, identifier=identifier)

    @staticmethod
    def release_lock(lock: Optional[Lock]) -> None:
        """Release a lock from one of the acquire functions; never raises."""
        locks.release_lock(lock)

    def is_upload_locked(self, image: str, build_id: str,
                         provider: str) -> bool:
        """Whether an upload to ``provider`` of the build is in progress."""
        return locks.lock_is_held(
            self._kazoo, paths.upload_lock_path(image, build_id, provider))

    def build_lock_ctime(self, image: str) -> Optional[int]:
        """While someone holds or waits for the image build lock of
        ``image``: the creation time of the lock directory (epoch
        milliseconds, for ``nodepool image-status``); otherwise None."""
        lock_path = paths.build_lock_path(image)
        if not locks.lock_contenders(self._kazoo, lock_path):
            return None
        stat = self._kazoo.exists(lock_path)
        return None if stat is None else stat.ctime
