# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Running disk-image-builder and finding what it left on disk.

Everything here is free of ZooKeeper and threads so that it can be tested
on its own:

* :func:`dib_command` and :func:`dib_environment` make the command line
  and environment of one build;
* :func:`run_dib` runs it with its output in a log file, a timeout and a
  stop switch;
* :class:`ImageFiles` names the files of one build in the images directory
  (``<images-dir>/<image>-<build_id>.<ext>`` plus checksums and the
  ``.d`` manifest directory) and :func:`scan_images_dir` finds every build
  present there;
* :func:`prune_build_logs`, :func:`free_mib` and the checksum helpers.

DIB runs with ``-x``, so a build log holds every command with its
arguments, the diskimage's ``env-vars`` (often credentials from the secure
file) among them.  Build logs are therefore created ``0640`` and the
directories we create for logs and images ``0750``
(:data:`PRIVATE_FILE_MODE`, :data:`PRIVATE_DIR_MODE`; the process umask
can only make them stricter).  Directories and files that already exist
keep their modes.
"""

import hashlib
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import nodepool

log = logging.getLogger("nodepool.builder.dib")

BUILDER_ID_FILE = "builder_id.txt"
PRIVATE_DIR_MODE = 0o750
PRIVATE_FILE_MODE = 0o640

# ``<image>-<build id>.<ext>``: a build's format file or manifest dir.
_BUILD_FILE_RE = re.compile(r"^(.*)-([abcdef\d]+)\.(?:\w+)$")
_CHECKSUMS = (("md5", 32), ("sha256", 64))


def expand_dib_cmd(dib_cmd: str) -> List[str]:
    """Split ``dib-cmd`` like a shell; ``%p`` is the nodepool package dir."""
    package_dir = os.path.dirname(os.path.abspath(nodepool.__file__))
    return shlex.split(dib_cmd.replace("%p", package_dir))


def dib_command(diskimage, image_types: Iterable[str],
                output_base: str) -> List[str]:
    """The argv of one DIB run writing ``<output_base>.<fmt>`` files."""
    types = sorted(set(image_types))
    argv = expand_dib_cmd(diskimage.dib_cmd)
    argv += ["-x", "-t", ",".join(types), "--checksum", "--no-tmpfs"]
    if "qcow2" in types:
        argv += ["--qemu-img-options", "compat=0.10"]
    argv += ["-o", output_base]
    argv += list(diskimage.elements)
    return argv


def dib_environment(diskimage, output_base: str,
                    elements_dir: Optional[str],
                    base_env: Optional[Mapping[str, str]] = None
                    ) -> Dict[str, str]:
    """The daemon's environment plus the DIB variables and ``env-vars``."""
    env = dict(os.environ if base_env is None else base_env)
    env["DIB_RELEASE"] = str(diskimage.release)
    env["DIB_IMAGE_NAME"] = diskimage.name
    env["DIB_IMAGE_FILENAME"] = output_base
    if elements_dir:
        env["ELEMENTS_PATH"] = elements_dir
    for key, value in diskimage.env_vars.items():
        env[key] = str(value)
    return env


def make_private_dir(path: str) -> None:
    """Create ``path`` (and missing parents) unless it exists; the
    directory itself gets :data:`PRIVATE_DIR_MODE`."""
    os.makedirs(path, mode=PRIVATE_DIR_MODE, exist_ok=True)


def world_accessible(path: str) -> bool:
    """Whether users outside the owner and group may enter or read
    ``path`` (False if it does not exist)."""
    try:
        return bool(os.stat(path).st_mode & 0o005)
    except FileNotFoundError:
        return False


def prune_build_logs(log_dir: str, image: str, retention: int) -> List[str]:
    """Keep the newest ``max(retention, 1)`` logs of ``image``.

    A negative ``retention`` disables pruning.  Only files named like a
    build log of this very image (``<image>-<id>.log``) are considered.
    Returns the removed paths.
    """
    if retention < 0:
        return []
    keep = max(retention, 1)
    pattern = re.compile(r"^%s-[abcdef\d]+\.log$" % re.escape(image))
    try:
        names = [n for n in os.listdir(log_dir) if pattern.match(n)]
    except FileNotFoundError:
        return []
    entries = []
    for name in names:
        path = os.path.join(log_dir, name)
        try:
            entries.append((os.stat(path).st_mtime, name, path))
        except FileNotFoundError:
            continue
    entries.sort(reverse=True)
    removed = []
    for _, _, path in entries[keep:]:
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


@dataclass
class DibResult:
    rc: int
    timed_out: bool = False
    stopped: bool = False


def run_dib(argv: List[str], env: Mapping[str, str], log_path: str,
            timeout: float, stop_event=None,
            poll: float = 0.5) -> DibResult:
    """Run DIB with stdout and stderr appended to ``log_path``.

    After ``timeout`` seconds, or once ``stop_event`` is set, the whole
    process group is killed and the result's rc is 1.  On a normal exit
    ``Exit code: <rc>`` is appended to the log.  A command that cannot be
    started gives rc 127 (as a shell would) with the error in the log.
    """
    make_private_dir(os.path.dirname(os.path.abspath(log_path)))
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                 PRIVATE_FILE_MODE)
    with os.fdopen(fd, "ab") as out:
        out.write(("Running: %s\n" % " ".join(
            shlex.quote(a) for a in argv)).encode("utf8"))
        out.flush()
        try:
            proc = subprocess.Popen(argv, env=dict(env), stdout=out,
                                    stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        except OSError as e:
            out.write(("Failed to run %s: %s\nExit code: 127\n"
                       % (argv[0], e)).encode("utf8"))
            return DibResult(127)
        deadline = time.monotonic() + timeout
        result = None
        while result is None:
            remaining = deadline - time.monotonic()
            try:
                rc = proc.wait(max(0.0, min(poll, remaining)))
                result = DibResult(rc)
                break
            except subprocess.TimeoutExpired:
                pass
            if stop_event is not None and stop_event.is_set():
                result = DibResult(1, stopped=True)
            elif time.monotonic() >= deadline:
                result = DibResult(1, timed_out=True)
        if result.timed_out or result.stopped:
            kill_process_group(proc)
            why = ("timed out after %ss" % timeout if result.timed_out
                   else "stopped: the builder is shutting down")
            out.write(("Build %s; killed\n" % why).encode("utf8"))
        else:
            out.write(("Exit code: %d\n" % result.rc).encode("utf8"))
    return result


def kill_process_group(proc: subprocess.Popen) -> None:
    """SIGKILL the group ``proc`` leads (``start_new_session``) and reap
    ``proc``."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass
    proc.wait()


def free_mib(path: str) -> float:
    """Free space (for unprivileged users) below ``path``, in MiB."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / (1024.0 * 1024.0)


def file_checksum(path: str, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ImageFiles:
    """The files of one build in an images directory."""

    def __init__(self, images_dir: str, image: str, build_id: str):
        self.images_dir = images_dir
        self.image = image
        self.build_id = build_id

    @property
    def base(self) -> str:
        return os.path.join(self.images_dir,
                            "%s-%s" % (self.image, self.build_id))

    def path(self, ext: str) -> str:
        return "%s.%s" % (self.base, ext)

    def formats(self) -> List[str]:
        """Extensions of the format files present (no checksums, no .d)."""
        prefix = os.path.basename(self.base) + "."
        found = []
        try:
            names = os.listdir(self.images_dir)
        except FileNotFoundError:
            return []
        for name in names:
            if not name.startswith(prefix):
                continue
            ext = name[len(prefix):]
            if not ext or "." in ext or ext == "d":
                continue
            if os.path.isfile(os.path.join(self.images_dir, name)):
                found.append(ext)
        return sorted(found)

    def exists(self) -> bool:
        """Whether any format file of the build is on this disk."""
        return bool(self.formats())

    def checksums(self, ext: str, create: bool = True) -> Tuple[str, str]:
        """``(md5, sha256)`` of a format file.

        Read from ``<file>.md5``/``<file>.sha256`` (the first 32/64
        characters) when DIB wrote them, otherwise computed and, with
        ``create``, written there.
        """
        values = []
        for algorithm, length in _CHECKSUMS:
            sum_path = "%s.%s" % (self.path(ext), algorithm)
            value = None
            try:
                with open(sum_path) as f:
                    value = f.read(length).strip() or None
            except FileNotFoundError:
                pass
            if value is None:
                value = file_checksum(self.path(ext), algorithm)
                if create:
                    with open(sum_path, "w") as f:
                        f.write("%s  %s\n" % (
                            value, os.path.basename(self.path(ext))))
            values.append(value)
        return values[0], values[1]

    def size(self, ext: str) -> int:
        """Allocated bytes of a format file (``st_blocks * 512``)."""
        return os.stat(self.path(ext)).st_blocks * 512

    def remove_format(self, ext: str) -> None:
        """Remove one format file with its checksum files."""
        for path in (self.path(ext), self.path(ext) + ".md5",
                     self.path(ext) + ".sha256"):
            _remove(path)

    def remove_all(self) -> None:
        """Remove every file of the build and its manifest directory.

        Missing files are fine.
        """
        prefix = os.path.basename(self.base) + "."
        try:
            names = os.listdir(self.images_dir)
        except FileNotFoundError:
            return
        for name in names:
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            # <base>.<ext>, <base>.<ext>.md5|sha256 and <base>.d only:
            # never another build whose id merely starts like ours.
            ext = rest.split(".", 1)[0]
            if not ext:
                continue
            _remove(os.path.join(self.images_dir, name))


def _remove(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def scan_images_dir(images_dir: str) -> List[Tuple[str, str]]:
    """Every ``(image, build_id)`` with files in ``images_dir``, sorted."""
    found = set()
    try:
        names = os.listdir(images_dir)
    except FileNotFoundError:
        return []
    for name in names:
        match = _BUILD_FILE_RE.match(name)
        if match:
            found.add((match.group(1), match.group(2)))
    return sorted(found)


def read_builder_id(images_dir: str) -> str:
    """This builder's id from ``<images-dir>/builder_id.txt``.

    Created (a uuid4 with dashes) on first use and reused forever.
    """
    import uuid
    path = os.path.join(images_dir, BUILDER_ID_FILE)
    try:
        with open(path) as f:
            value = f.read().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    value = str(uuid.uuid4())
    make_private_dir(images_dir)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(value)
    os.replace(tmp, path)
    return value
