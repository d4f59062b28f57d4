# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The build worker: scheduled and manual diskimage builds.

Per pass, for every buildable diskimage (the pass ends early when the
builder stops, ZooKeeper goes away or the config files change):

* paused (config ``pause`` or the ZooKeeper pause flag) → nothing;
* no image types → nothing;
* a ``request-build`` znode → a manual build, whose request is removed
  once the build is READY;
* otherwise a scheduled build when there is no READY build, the newest is
  older than ``rebuild-age`` or lacks one of the wanted formats.

Builds run under the image build lock, taken without blocking: another
builder holding it is building this image already.
"""

import os
import time
from typing import List, Optional

from nodepool import stats as stats_mod
from nodepool.builder import dib
from nodepool.builder.common import BuilderWorker, image_types
from nodepool.exceptions import LockError
from nodepool.zk.models import BuildState, ImageBuild


def needs_build(newest: Optional[ImageBuild], types: List[str],
                rebuild_age: float, now: float) -> bool:
    """Whether a scheduled build is due given the newest READY build."""
    if newest is None:
        return True
    if now - (newest.state_time or 0.0) >= rebuild_age:
        return True
    return not set(types) <= set(newest.formats)


class BuildWorker(BuilderWorker):
    name = "BuildWorker"

    def __init__(self, builder, interval: float, index: int = 0):
        super().__init__(builder, interval, index)
        # image -> stats.WORKER_* (read by the cleanup worker's gauges)
        self.states = {}

    def run_once(self) -> None:
        for diskimage in list(self.config.diskimages.values()):
            if (self.stop_event.is_set() or not self.zk_client.connected
                    or self.config_changed()):
                return
            if not diskimage.buildable:
                continue
            try:
                self.check_image(diskimage)
            except Exception:
                self.log.exception("Error checking image %s",
                                   diskimage.name)

    def check_image(self, diskimage) -> Optional[ImageBuild]:
        """Build ``diskimage`` if it is due; return the build made, if any."""
        name = diskimage.name
        if diskimage.pause or self.images.is_image_paused(name):
            self.states[name] = stats_mod.WORKER_PAUSED
            return None
        self.states[name] = stats_mod.WORKER_IDLE
        types = image_types(self.config, name)
        if not types:
            return None
        if self.images.has_build_request(name):
            return self._manual_build(diskimage, types)
        newest = self._newest(name)
        if not needs_build(newest, types, diskimage.rebuild_age,
                           time.time()):
            return None
        if not self._enough_space():
            return None
        lock = self._lock(name)
        if lock is None:
            return None
        try:
            again = self._newest(name)
            if _build_id(again) != _build_id(newest):
                # Somebody else finished a build meanwhile.
                return None
            self.log.info("Building image %s (scheduled)", name)
            return self.build(diskimage, types)
        finally:
            self.images.release_lock(lock)

    def _manual_build(self, diskimage, types) -> Optional[ImageBuild]:
        name = diskimage.name
        if not self._enough_space():
            return None
        lock = self._lock(name)
        if lock is None:
            return None
        try:
            if not self.images.has_build_request(name):
                return None
            self.log.info("Building image %s (requested)", name)
            build = self.build(diskimage, types)
            if build.state == BuildState.READY:
                self.images.remove_build_request(name)
            return build
        finally:
            self.images.release_lock(lock)

    def _newest(self, name) -> Optional[ImageBuild]:
        builds = self.images.get_most_recent_builds(name, 1)
        return builds[0] if builds else None

    def _lock(self, name):
        try:
            return self.images.acquire_image_build_lock(
                name, blocking=False, identifier=self.builder.hostname)
        except LockError:
            self.log.debug("Image %s is being built elsewhere", name)
            return None

    def _enough_space(self) -> bool:
        required = self.config.images_dir_required_free
        if not required or required <= 0:
            return True
        try:
            free = dib.free_mib(self.config.images_dir)
        except OSError as e:
            self.log.error("Cannot check free space of %s: %s",
                           self.config.images_dir, e)
            return False
        if free < required:
            self.log.error("Not building: %.0f MiB free in %s, %d MiB "
                           "required", free, self.config.images_dir,
                           required)
            return False
        return True

    # The build itself ----------------------------------------------------

    def _record(self, name, types) -> ImageBuild:
        build = ImageBuild(image_name=name)
        build.builder = self.builder.hostname
        build.builder_id = self.builder.builder_id
        build.formats = list(types)
        return build

    def build(self, diskimage, types: List[str]) -> ImageBuild:
        """Run one build under the (held) image build lock.

        Returns the final record (READY or FAILED), as stored.
        """
        name = diskimage.name
        # The session the build lock lives in; read before the record is
        # written so that no session change after that goes unnoticed.
        guard = self.zk_client.guard()
        record = self._record(name, types)
        record.state = BuildState.BUILDING
        build_id = self.images.store_build(name, record)
        self.states[name] = stats_mod.WORKER_BUILDING
        try:
            ok = self._run(diskimage, types, build_id)
        finally:
            self.states[name] = stats_mod.WORKER_IDLE
        if ok and guard.lost:
            self.log.error("ZooKeeper session lost during build %s of %s; "
                           "marking it failed", build_id, name)
            ok = False
        final = self._record(name, types)
        if ok:
            final.state = BuildState.READY
            final.username = diskimage.username
            final.python_path = diskimage.python_path
            final.shell_type = diskimage.shell_type
        else:
            final.state = BuildState.FAILED
        files = dib.ImageFiles(self.config.images_dir, name, build_id)
        try:
            if self.images.get_build(name, build_id) is None:
                raise RuntimeError("build record vanished")
            self.images.store_build(name, final, build_id)
        except Exception as e:
            self.log.error("Could not store build %s of %s (%s); removing "
                           "its files", build_id, name, e)
            files.remove_all()
            final.state = BuildState.FAILED
            final.id = build_id
            return final
        self.log.info("Build %s of %s is %s", build_id, name, final.state)
        return final

    def _run(self, diskimage, types, build_id) -> bool:
        name = diskimage.name
        config = self.config
        files = dib.ImageFiles(config.images_dir, name, build_id)
        start = time.monotonic()
        rc = 1
        sizes = None
        try:
            dib.make_private_dir(config.build_log_dir)
            dib.prune_build_logs(config.build_log_dir, name,
                                 config.build_log_retention)
            log_path = os.path.join(config.build_log_dir,
                                    "%s-%s.log" % (name, build_id))
            argv = dib.dib_command(diskimage, types, files.base)
            env = dib.dib_environment(diskimage, files.base,
                                      config.elements_dir)
            self.log.info("Running %s (log %s)", " ".join(argv), log_path)
            result = dib.run_dib(argv, env, log_path,
                                 diskimage.build_timeout, self.stop_event,
                                 poll=self.builder.dib_poll)
            rc = result.rc
            if result.stopped:
                self.log.info("Build %s of %s stopped: shutting down",
                              build_id, name)
            elif result.timed_out:
                self.log.error("Build %s of %s timed out after %ss",
                               build_id, name, diskimage.build_timeout)
            elif rc != 0:
                self.log.error("DIB failed for build %s of %s with exit "
                               "code %d; see %s", build_id, name, rc,
                               log_path)
            else:
                sizes = self._check_outputs(files, types)
        except Exception:
            self.log.exception("Build %s of %s failed", build_id, name)
            rc = rc or 1
        ok = rc == 0 and sizes is not None
        self.builder.stats.record_image_build(
            name, time.monotonic() - start, rc, time.time(),
            sizes if ok else None)
        return ok

    def _check_outputs(self, files, types) -> Optional[dict]:
        sizes = {}
        for ext in types:
            if not os.path.isfile(files.path(ext)):
                self.log.error("DIB did not write %s", files.path(ext))
                return None
            files.checksums(ext)
            sizes[ext] = files.size(ext)
        return sizes


def _build_id(build: Optional[ImageBuild]) -> Optional[str]:
    return build.id if build is not None else None
