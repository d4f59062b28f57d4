# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The cleanup worker ("janitor") of the builder.

Each cycle, per image known to ZooKeeper:

* the *keep set* is the two newest READY builds of a configured image
  (empty once the image left the config);
* uploads to providers that no longer list the image are deleted; for
  kept builds, stray ``uploading`` records nobody uploads (upload lock
  free), ``failed`` and ``deleting`` uploads are removed;
* every other build (old READY, FAILED, stale ``building`` whose builder
  is gone, ``deleting``) loses the uploads that are not among the two
  newest READY uploads of its provider, is marked ``deleting`` once all
  its uploads are gone or ``deleting``, and its znode is removed once none
  remain.

Deleting an upload: mark it ``deleting`` (unless an upload is running),
delete the cloud image (a failure keeps the record for the next cycle),
then remove the record.  Finally the local files of builds that are gone
or ``deleting`` are removed from this builder's images directory, formats
no longer needed are dropped for ``delete-after-upload`` images, and the
builder gauges are emitted.
"""

from typing import Dict, List, Set, Tuple

from nodepool import exceptions
from nodepool.builder import dib
from nodepool.builder.common import (
    BuilderWorker, image_providers, provider_image_type)
from nodepool.exceptions import LockError
from nodepool.zk.models import BuildState, UploadState

KEEP_BUILDS = 2
KEEP_UPLOADS = 2


def _state_time(record) -> float:
    return record.state_time or 0.0


def keep_set(builds, configured: bool) -> Set[str]:
    """Ids of the builds to keep: the newest READY ones of a configured
    image."""
    if not configured:
        return set()
    ready = [b for b in builds if b.state == BuildState.READY]
    ready.sort(key=_state_time, reverse=True)
    return {b.id for b in ready[:KEEP_BUILDS]}


class CleanupWorker(BuilderWorker):
    name = "CleanupWorker"

    def run_once(self) -> None:
        providers = image_providers(self.config)
        for image in self.images.get_image_names():
            if self.stop_event.is_set() or not self.zk_client.connected:
                return
            try:
                self.cleanup_image(image, providers)
            except Exception:
                self.log.exception("Error cleaning up image %s", image)
        try:
            self.cleanup_local_files(providers)
        except Exception:
            self.log.exception("Error cleaning up local files")
        try:
            self.emit_stats()
        except Exception:
            self.log.exception("Error emitting builder stats")

    # ZooKeeper records and cloud images ----------------------------------

    def recent_uploads(self, image: str, builds, providers
                       ) -> Set[Tuple[str, str, str]]:
        """``(build, provider, upload)`` of the two newest READY uploads per
        provider among the READY builds."""
        recent = set()
        ready_builds = [b for b in builds if b.state == BuildState.READY]
        for provider in providers:
            uploads = []
            for build in ready_builds:
                uploads.extend(self.images.get_uploads(
                    image, build.id, provider.name, [UploadState.READY]))
            uploads.sort(key=_state_time, reverse=True)
            for upload in uploads[:KEEP_UPLOADS]:
                recent.add((upload.build_id, upload.provider_name,
                            upload.id))
        return recent

    def cleanup_image(self, image: str, providers) -> None:
        configured = image in self.config.diskimages
        builds = self.images.get_builds(image)
        keep = keep_set(builds, configured)
        recent = self.recent_uploads(image, builds, providers)
        for build in builds:
            try:
                self.cleanup_build(image, build, keep, recent, providers)
            except Exception:
                self.log.exception("Error cleaning up build %s of %s",
                                   build.id, image)

    def cleanup_build(self, image, build, keep, recent, providers) -> None:
        for provider in providers:
            uploads = self.images.get_uploads(image, build.id, provider.name)
            if image not in provider.diskimages:
                for upload in uploads:
                    self.delete_upload(upload, provider)
            elif build.id in keep:
                for upload in uploads:
                    if upload.state == UploadState.UPLOADING:
                        if not self.images.is_upload_locked(
                                image, build.id, provider.name):
                            self.log.info("Removing stray upload record %s",
                                          _upload_path(upload))
                            self._remove_record(upload)
                    elif upload.state in (UploadState.FAILED,
                                          UploadState.DELETING):
                        self.delete_upload(upload, provider)
        if build.state != BuildState.DELETING:
            if build.id in keep:
                return
            if build.state == BuildState.BUILDING and \
                    self._build_in_progress(image, build):
                return
        for provider in providers:
            for upload in self.images.get_uploads(image, build.id,
                                                  provider.name):
                if (upload.build_id, upload.provider_name,
                        upload.id) not in recent:
                    self.delete_upload(upload, provider)
        remaining = []
        for provider_name in self.images.get_build_providers(image,
                                                             build.id):
            remaining.extend(self.images.get_uploads(image, build.id,
                                                     provider_name))
        if all(u.state == UploadState.DELETING for u in remaining) and \
                build.state != BuildState.DELETING:
            self._mark_build_deleting(image, build)
        if not remaining:
            if self.images.delete_build(image, build.id):
                self.log.info("Deleted build %s of %s", build.id, image)

    def _build_in_progress(self, image, build) -> bool:
        """Whether a ``building`` build is still being built: the image
        build lock is held, or its state changed once we held it."""
        try:
            lock = self.images.acquire_image_build_lock(
                image, blocking=False, identifier=self.builder.hostname)
        except LockError:
            return True
        try:
            again = self.images.get_build(image, build.id)
            if again is None or again.state != BuildState.BUILDING:
                return True
        finally:
            self.images.release_lock(lock)
        self.log.info("Build %s of %s was left building by a builder that "
                      "is gone", build.id, image)
        return False

    def _mark_build_deleting(self, image, build) -> None:
        try:
            lock = self.images.acquire_build_id_lock(
                image, build.id, blocking=False,
                identifier=self.builder.hostname)
        except LockError:
            return
        try:
            again = self.images.get_build(image, build.id)
            if again is None or again.state == BuildState.DELETING:
                return
            again.state = BuildState.DELETING
            self.images.store_build(image, again, build.id)
            build.state = BuildState.DELETING
        finally:
            self.images.release_lock(lock)

    def _remove_record(self, upload) -> bool:
        try:
            lock = self.images.acquire_upload_number_lock(
                upload.image_name, upload.build_id, upload.provider_name,
                upload.id, blocking=False, identifier=self.builder.hostname)
        except LockError:
            return False
        try:
            return self.images.delete_upload(
                upload.image_name, upload.build_id, upload.provider_name,
                upload.id)
        finally:
            self.images.release_lock(lock)

    def delete_upload(self, upload, provider) -> None:
        """Delete the cloud image of an upload, then its record."""
        image, build_id = upload.image_name, upload.build_id
        if upload.state != UploadState.DELETING:
            if upload.state == UploadState.UPLOADING and \
                    self.images.is_upload_locked(image, build_id,
                                                 upload.provider_name):
                return
            try:
                lock = self.images.acquire_upload_number_lock(
                    image, build_id, upload.provider_name, upload.id,
                    blocking=False, identifier=self.builder.hostname)
            except LockError:
                return
            try:
                again = self.images.get_upload(image, build_id,
                                               upload.provider_name,
                                               upload.id)
                if again is None:
                    return
                again.state = UploadState.DELETING
                self.images.store_upload(image, build_id,
                                         upload.provider_name, again,
                                         upload.id)
                upload = again
            finally:
                self.images.release_lock(lock)
        if upload.external_id:
            try:
                adapter = self.builder.adapters.get(provider)
                self.log.info("Deleting image %s (%s) of upload %s",
                              upload.external_name, upload.external_id,
                              _upload_path(upload))
                adapter.delete_image(upload.external_id)
            except exceptions.NotFound:
                pass
            except Exception:
                self.log.exception("Could not delete image %s of upload %s;"
                                   " retrying later", upload.external_id,
                                   _upload_path(upload))
                return
        if self._remove_record(upload):
            self.log.info("Deleted upload %s", _upload_path(upload))

    # Local files ------------------------------------------------------------

    def cleanup_local_files(self, providers) -> None:
        images_dir = self.config.images_dir
        for image, build_id in dib.scan_images_dir(images_dir):
            if self.stop_event.is_set():
                return
            build = self.images.get_build(image, build_id)
            files = dib.ImageFiles(images_dir, image, build_id)
            if build is None or build.state == BuildState.DELETING:
                self.log.info("Removing local files of build %s of %s",
                              build_id, image)
                files.remove_all()
            elif build.state == BuildState.READY:
                self._delete_after_upload(image, build, files, providers)

    def _delete_after_upload(self, image, build, files, providers) -> None:
        diskimage = self.config.diskimages.get(image)
        if diskimage is None or not diskimage.delete_after_upload:
            return
        keep = set(diskimage.keep_formats or ())
        needed = set()
        for provider in providers:
            if image not in provider.diskimages:
                continue
            if not self.images.get_uploads(image, build.id, provider.name,
                                           [UploadState.READY]):
                needed.add(provider_image_type(provider))
        for ext in files.formats():
            if ext in build.formats and ext not in keep and \
                    ext not in needed:
                self.log.info("Removing %s (uploaded everywhere)",
                              files.path(ext))
                files.remove_format(ext)

    # Stats -----------------------------------------------------------------

    def emit_stats(self) -> None:
        stats = self.builder.stats
        if not stats.enabled:
            return
        requested: Dict[str, bool] = {}
        for name, diskimage in self.config.diskimages.items():
            if diskimage.buildable:
                requested[name] = self.images.has_build_request(name)
        stats.update_build_requests(requested)
        builds: List[Tuple[str, int]] = []
        uploads: List[Tuple[str, str, int]] = []
        for worker in self.builder.build_workers:
            builds.extend(worker.states.items())
        for worker in self.builder.upload_workers:
            uploads.extend((image, provider, state) for (image, provider),
                           state in worker.states.items())
        stats.update_builder_workers(builds, uploads,
                                     fqdn=self.builder.hostname)


def _upload_path(upload) -> str:
    return "%s/%s/%s/%s" % (upload.image_name, upload.build_id,
                            upload.provider_name, upload.id)
