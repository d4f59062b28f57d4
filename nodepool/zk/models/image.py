# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Image records: builds, uploads and the image container znode."""

from typing import Any, Dict, List, Optional, Tuple

from nodepool.zk.models.base import (DEFAULT_PYTHON_PATH, DEFAULT_USERNAME,
                                     Record, _check_id, _str_list)
from nodepool.zk.models.states import BuildState, UploadState


class ImageBuild(Record):
    """An image build, ``/nodepool/images/<image>/builds/<id>``.

    ``formats`` is a list in memory and a sorted, comma-joined string on
    the wire.  ``builder``, ``builder_id`` and ``formats`` are only written
    when set (non-empty for ``formats``).
    """

    STATES = BuildState
    _ID_ATTRS = ("image_name", "id")
    _FIELDS = ("builder", "builder_id", "formats", "username", "python_path",
               "shell_type")

    def __init__(self, image_name: Optional[str] = None,
                 id: Optional[str] = None):
        _check_id("image_name", image_name)
        super().__init__(id)
        self.image_name = image_name
        self.builder: Optional[str] = None
        self.builder_id: Optional[str] = None
        self.formats: List[str] = []
        self.username: Optional[str] = DEFAULT_USERNAME
        self.python_path: Optional[str] = None
        self.shell_type: Optional[str] = None

    def _dump(self) -> Dict[str, Any]:
        data = {}
        if self.builder is not None:
            data["builder"] = self.builder
        if self.builder_id is not None:
            data["builder_id"] = self.builder_id
        if self.formats:
            data["formats"] = ",".join(sorted(self.formats))
        data["username"] = self.username
        data["python_path"] = self.python_path
        data["shell_type"] = self.shell_type
        return data

    def _load(self, data: dict) -> None:
        self.builder = data.get("builder")
        self.builder_id = data.get("builder_id")
        formats = data.get("formats")
        if isinstance(formats, str):
            self.formats = [f for f in formats.split(",") if f]
        else:
            self.formats = _str_list(data, "formats")
        self.username = data.get("username", DEFAULT_USERNAME)
        self.python_path = data.get("python_path", DEFAULT_PYTHON_PATH)
        self.shell_type = data.get("shell_type")

    def _repr_extra(self) -> List[Tuple[str, Any]]:
        return [("builder", self.builder), ("formats", self.formats)]


class ImageUpload(Record):
    """An upload of a build to a provider.

    Lives at ``.../builds/<build_id>/providers/<provider>/images/<id>``;
    the image, build and provider names come from that path.
    """

    STATES = UploadState
    _ID_ATTRS = ("image_name", "build_id", "provider_name", "id")
    _FIELDS = ("external_id", "external_name", "format", "username",
               "python_path", "shell_type")

    def __init__(self, image_name: Optional[str] = None,
                 build_id: Optional[str] = None,
                 provider_name: Optional[str] = None,
                 id: Optional[str] = None):
        _check_id("image_name", image_name)
        _check_id("build_id", build_id)
        _check_id("provider_name", provider_name)
        super().__init__(id)
        self.image_name = image_name
        self.build_id = build_id
        self.provider_name = provider_name
        self.external_id: Optional[str] = None
        self.external_name: Optional[str] = None
        self.format: Optional[str] = None
        self.username: Optional[str] = DEFAULT_USERNAME
        self.python_path: Optional[str] = None
        self.shell_type: Optional[str] = None

    def _dump(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in self._FIELDS}

    def _load(self, data: dict) -> None:
        self.external_id = data.get("external_id")
        self.external_name = data.get("external_name")
        self.format = data.get("format")
        self.username = data.get("username", DEFAULT_USERNAME)
        self.python_path = data.get("python_path", DEFAULT_PYTHON_PATH)
        self.shell_type = data.get("shell_type")

    def _repr_extra(self) -> List[Tuple[str, Any]]:
        return [("external_id", self.external_id), ("format", self.format)]


class Image:
    """The container znode ``/nodepool/images/<name>`` as the image cache
    sees it.

    It has no payload; ``paused`` mirrors the presence of the ``pause``
    child and is maintained by whoever watches that child, so
    :meth:`update_from` leaves it alone.
    """

    def __init__(self, name: Optional[str] = None, paused: bool = False):
        _check_id("name", name)
        self.name = name
        self.paused = bool(paused)
        self.stat = None

    @property
    def mzxid(self) -> int:
        """The zxid of the last change read, or -1 if never read."""
        return self.stat.mzxid if self.stat is not None else -1

    def to_dict(self) -> Dict[str, Any]:
        """Always ``{}``: the container carries no data."""
        return {}

    def serialize(self) -> bytes:
        """Always ``b""``."""
        return b""

    @classmethod
    def from_dict(cls, data: dict, name: Optional[str] = None) -> "Image":
        """An unpaused Image; ``data`` is ignored."""
        return cls(name)

    @classmethod
    def from_bytes(cls, data: bytes, stat=None,
                   name: Optional[str] = None) -> "Image":
        """An unpaused Image with ``stat``; the payload is ignored."""
        image = cls(name)
        image.stat = stat
        return image

    def update_from(self, other: "Image", take: bool = False) -> None:
        """Take ``stat`` from ``other``; ``name`` and ``paused`` are kept
        (``take`` changes nothing: there are no containers)."""
        if type(other) is not type(self):
            raise TypeError("cannot update Image from %s"
                            % type(other).__name__)
        self.stat = other.stat

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.name == other.name and self.paused == other.paused

    __hash__ = None

    def __repr__(self) -> str:
        return "<Image name=%r paused=%r>" % (self.name, self.paused)
