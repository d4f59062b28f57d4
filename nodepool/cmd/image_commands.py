# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The ``nodepool`` subcommands about images: listings (also of alien
cloud images), builds, uploads, pausing and export/import."""

import json
import logging
import os

from nodepool import status
from nodepool.cmd.context import CommandError, OneLineLog, print_table

log = logging.getLogger("nodepool.cmd")


def cmd_image_list(ctx) -> int:
    print_table(status.image_list(status.read_uploads(ctx.images)))
    return 0


def cmd_dib_image_list(ctx) -> int:
    builds, paused = status.read_builds(ctx.images)
    print_table(status.dib_image_list(builds, paused))
    return 0


def cmd_image_status(ctx) -> int:
    print_table(status.image_status(status.read_image_status(ctx.images)))
    return 0


def cmd_alien_image_list(ctx) -> int:
    """Cloud images tagged by nodepool that no READY upload knows.

    Asks each provider's adapter for its own images
    (:meth:`Adapter.list_images`; drivers that cannot list images
    contribute nothing) and shows those carrying ``nodepool_build_id``
    whose id is the external id of no READY upload.  The ids of every
    provider's uploads count, so providers sharing a cloud account do
    not call each other's images alien.  A provider whose listing fails
    is logged (one line unless ``--debug``) and skipped.
    """
    from nodepool import driver
    from nodepool.zk.models import UploadState
    wanted = ctx.args.provider
    if wanted and wanted not in ctx.config.providers:
        raise CommandError("Provider %s is not defined in the config"
                           % wanted)
    errors = log if ctx.args.debug else OneLineLog(log)
    known = {upload.external_id
             for upload in status.read_uploads(ctx.images)
             if upload.state == UploadState.READY}
    rows = []
    for name, provider in ctx.config.providers.items():
        if wanted and name != wanted:
            continue
        try:
            adapter = driver.get_driver(provider.driver).get_adapter(
                provider, warm=False)
        except NotImplementedError:
            log.info("Provider %s: driver %s cannot list images", name,
                     provider.driver)
            continue
        except Exception:
            errors.exception("Cannot talk to provider %s" % name)
            continue
        try:
            images = [image for image in adapter.list_images()
                      if "nodepool_build_id" in image.metadata
                      and image.id not in known]
        except Exception:
            errors.exception("Listing images of provider %s failed" % name)
            images = []
        finally:
            try:
                adapter.stop()
            except Exception:
                log.debug("Stopping the adapter of %s failed", name,
                          exc_info=True)
        images.sort(key=lambda image: (image.name or "", str(image.id)))
        rows.extend({"provider": name, "name": image.name, "id": image.id}
                    for image in images)
    print(status.render_table(
        [status.Column("provider", "Provider"), status.Column("name", "Name"),
         status.Column("id", "Image ID")], rows))
    return 0


def cmd_image_build(ctx) -> int:
    image = ctx.args.image
    diskimage = ctx.config.diskimages.get(image)
    if diskimage is None or diskimage.abstract:
        raise CommandError("Trying to build a non disk-image-builder "
                           "image: %s" % image)
    if diskimage.pause:
        raise CommandError("Skipping build request for image %s; paused"
                           % image)
    ctx.images.submit_build_request(image)
    return 0


def cmd_image_delete(ctx) -> int:
    from nodepool.zk.models import UploadState
    args = ctx.args
    upload = ctx.images.get_upload(args.image, args.build_id, args.provider,
                                   args.upload_id)
    if upload is None:
        print("Image upload not found")
        return 1
    if upload.state == UploadState.UPLOADING:
        print("Cannot delete because image upload in progress")
        return 1
    upload.state = UploadState.DELETING
    ctx.images.store_upload(args.image, args.build_id, args.provider,
                            upload, args.upload_id)
    return 0


def cmd_dib_image_delete(ctx) -> int:
    from nodepool.zk.models import BuildState
    label = ctx.args.id
    try:
        image, build_id = status.split_build_label(label)
    except ValueError:
        build = None
    else:
        build = ctx.images.get_build(image, build_id)
    if build is None:
        print("Build %s not found" % label)
        return 1
    if build.state == BuildState.BUILDING:
        print("Cannot delete a build in progress")
        return 1
    build.state = BuildState.DELETING
    ctx.images.store_build(image, build, build_id)
    return 0


def cmd_image_pause(ctx) -> int:
    ctx.images.pause_image(ctx.args.image)
    return 0


def cmd_image_unpause(ctx) -> int:
    ctx.images.unpause_image(ctx.args.image)
    return 0


def cmd_export_image_data(ctx) -> int:
    data = ctx.images.export_image_data()
    # Owner-only: the records name cloud image ids.  Truncated, unlike
    # upstream, so a shorter export never leaves a tail of an older one.
    fd = os.open(ctx.args.path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC,
                 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    return 0


def cmd_import_image_data(ctx) -> int:
    try:
        with open(ctx.args.path) as f:
            data = json.load(f)
    except ValueError as e:
        raise CommandError("%s is not valid JSON: %s" % (ctx.args.path, e))
    if not isinstance(data, dict):
        raise CommandError("%s does not hold exported image data"
                           % ctx.args.path)
    try:
        ctx.images.import_image_data(data)
    except ValueError as e:
        raise CommandError("Cannot import %s: %s" % (ctx.args.path, e))
    return 0
