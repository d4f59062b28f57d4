# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The upload worker: put local builds into providers.

Per pass, for each image-managing provider and each of its diskimages:
skip when the provider pauses the image, when there is no READY build,
when this builder does not hold the build's files, when a READY upload of
that build exists already or when the build lacks the provider's format.
Otherwise take the upload lock without blocking, check again, record an
``uploading`` upload, call the adapter and store the outcome.  A pass ends
after one successful upload, so that the config is re-read between
(possibly hour-long) uploads; failures go on with the next image.

The provider's ``post-upload-hook`` runs after a successful upload, in a
process group of its own, for at most ``post-upload-hook-timeout``
seconds (our extension: nodepool 11 waits forever, and a hung hook holds
the upload worker and the upload lock).  A hook that fails, cannot be
started, runs out of time or is still running when the builder stops (its
whole group is then killed) fails the upload, and the uploaded image is
deleted.
"""

import os
import subprocess
import tempfile
import time
from typing import NamedTuple, Optional

from nodepool import stats as stats_mod
from nodepool.builder import dib
from nodepool.builder.common import (
    BuilderWorker, image_providers, provider_image_type)
from nodepool.exceptions import LockError
from nodepool.zk.models import BuildState, ImageUpload, UploadState


def external_name(provider, image: str, upload_id: str,
                  timestamp: int) -> str:
    """The image's name in the cloud (``image-name-format``)."""
    return provider.external_image_name(image, upload_id, timestamp)


def upload_metadata(diskimage, provider_image, build_id: str,
                    upload_id: str, provider_name: str) -> dict:
    """Image properties/tags: the diskimage's ``metadata``, then the
    provider image's ``meta``/``tags`` (winning), then nodepool's own."""
    metadata = dict(diskimage.metadata)
    metadata.update(provider_image.upload_metadata)
    metadata.update(nodepool_build_id=build_id,
                    nodepool_upload_id=upload_id,
                    nodepool_provider_name=provider_name)
    return metadata


class HookResult(NamedTuple):
    """How a post-upload hook ended; ``rc`` is None when it was killed."""

    rc: Optional[int]
    stdout: bytes
    stderr: bytes
    stopped: bool = False

    @property
    def timed_out(self) -> bool:
        return self.rc is None and not self.stopped


def run_hook(argv, timeout: float, stop_event=None,
             poll: float = 0.5) -> HookResult:
    """Run ``argv`` in a new session; kill its process group after
    ``timeout`` seconds, or once ``stop_event`` is set.

    Output goes to temporary files rather than pipes, so that a
    background process the hook leaves behind (holding its stdout) cannot
    make a hook that exited look hung.

    :raises OSError: the hook cannot be started.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, start_new_session=True)
        deadline = time.monotonic() + timeout
        rc: Optional[int] = None
        stopped = False
        while True:
            remaining = deadline - time.monotonic()
            try:
                rc = proc.wait(max(0.0, min(poll, remaining)))
                break
            except subprocess.TimeoutExpired:
                pass
            if stop_event is not None and stop_event.is_set():
                stopped = True
                break
            if time.monotonic() >= deadline:
                break
        if rc is None:
            dib.kill_process_group(proc)
        out.seek(0)
        err.seek(0)
        return HookResult(rc, out.read(), err.read(), stopped)


class UploadWorker(BuilderWorker):
    name = "UploadWorker"

    def __init__(self, builder, interval: float, index: int = 0):
        super().__init__(builder, interval, index)
        # (image, provider) -> stats.WORKER_*
        self.states = {}

    def run_once(self) -> None:
        for provider in image_providers(self.config):
            for provider_image in list(provider.diskimages.values()):
                if (self.stop_event.is_set() or not self.zk_client.connected
                        or self.config_changed()):
                    return
                try:
                    if self.check_upload(provider, provider_image):
                        return
                except Exception:
                    self.log.exception("Error uploading %s to %s",
                                       provider_image.name, provider.name)

    def _has_ready_upload(self, image, build_id, provider_name) -> bool:
        return bool(self.images.get_uploads(image, build_id, provider_name,
                                            [UploadState.READY]))

    def check_upload(self, provider, provider_image) -> bool:
        """Upload the newest build of one image if needed; True if one
        succeeded."""
        image = provider_image.name
        key = (image, provider.name)
        if provider_image.pause:
            self.states[key] = stats_mod.WORKER_PAUSED
            return False
        self.states[key] = stats_mod.WORKER_IDLE
        diskimage = self.config.diskimages.get(image)
        if diskimage is None:
            return False
        builds = self.images.get_most_recent_builds(image, 1)
        if not builds:
            return False
        build = builds[0]
        files = dib.ImageFiles(self.config.images_dir, image, build.id)
        if not files.exists():
            return False
        if self._has_ready_upload(image, build.id, provider.name):
            return False
        image_type = provider_image_type(provider)
        if image_type not in build.formats:
            return False
        if not os.path.isfile(files.path(image_type)):
            # E.g. removed by delete-after-upload before this provider
            # listed the image.
            return False
        try:
            lock = self.images.acquire_upload_lock(
                image, build.id, provider.name, blocking=False,
                identifier=self.builder.hostname)
        except LockError:
            return False
        try:
            if self._has_ready_upload(image, build.id, provider.name):
                return False
            build = self.images.get_build(image, build.id)
            if build is None or build.state == BuildState.DELETING:
                return False
            return self.upload(provider, provider_image, diskimage, build,
                               files, image_type)
        finally:
            self.images.release_lock(lock)

    def _record(self, build) -> ImageUpload:
        upload = ImageUpload()
        upload.username = build.username
        upload.python_path = build.python_path
        upload.shell_type = build.shell_type
        return upload

    def upload(self, provider, provider_image, diskimage, build, files,
               image_type) -> bool:
        """Upload under the held upload lock; store the outcome."""
        image = build.image_name
        record = self._record(build)
        record.state = UploadState.UPLOADING
        upload_id = self.images.store_upload(image, build.id, provider.name,
                                             record)
        name = external_name(provider, image, upload_id, int(time.time()))
        metadata = upload_metadata(diskimage, provider_image, build.id,
                                   upload_id, provider.name)
        filename = files.path(image_type)
        key = (image, provider.name)
        self.states[key] = stats_mod.WORKER_UPLOADING
        start = time.monotonic()
        external_id = None
        try:
            self.log.info("Uploading %s build %s to %s as %s", image,
                          build.id, provider.name, name)
            md5, sha256 = files.checksums(image_type)
            adapter = self.builder.adapters.get(provider)
            external_id = adapter.upload_image(
                provider_image, name, filename, image_type, metadata,
                md5, sha256)
            ok = self._post_upload_hook(provider, adapter, external_id,
                                        filename)
        except Exception:
            self.log.exception("Failed to upload %s build %s to %s", image,
                               build.id, provider.name)
            ok = False
        finally:
            self.states[key] = stats_mod.WORKER_IDLE
        final = self._record(build)
        if ok:
            final.state = UploadState.READY
            final.external_id = external_id
            final.external_name = name
            final.format = image_type
        else:
            final.state = UploadState.FAILED
        self.images.store_upload(image, build.id, provider.name, final,
                                 upload_id)
        if ok:
            self.log.info("Uploaded %s build %s to %s: %s", image, build.id,
                          provider.name, external_id)
            self.builder.stats.record_image_upload(
                image, provider.name, time.monotonic() - start)
        return ok

    def _post_upload_hook(self, provider, adapter, external_id,
                          filename) -> bool:
        hook: Optional[str] = provider.post_upload_hook
        if not hook:
            return True
        timeout = provider.post_upload_hook_timeout
        try:
            result = run_hook([hook, provider.name, str(external_id),
                               filename], timeout, self.stop_event,
                              poll=self.builder.dib_poll)
        except OSError as e:
            self.log.error("Cannot run post upload hook %s: %s", hook, e)
        else:
            if result.rc == 0:
                return True
            if result.stopped:
                what = "killed: the builder is stopping"
            elif result.timed_out:
                what = "timed out after %ss; killed" % timeout
            else:
                what = "failed with exit code %d" % result.rc
            self.log.error("Post upload hook %s %s\nstdout:\n%s\n"
                           "stderr:\n%s", hook, what,
                           result.stdout.decode("utf8", "replace"),
                           result.stderr.decode("utf8", "replace"))
        try:
            adapter.delete_image(external_id)
        except Exception:
            self.log.exception("Could not delete image %s after the hook "
                               "failed; leak cleanup will", external_id)
        return False
