# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""DIB command line, environment, runs, logs and on-disk build files."""

import hashlib
import os
import sys
import threading
import uuid

import pytest

import nodepool
from nodepool.builder import dib
from nodepool.config.models import DiskImage


def diskimage(**changes):
    values = dict(
        name="ubuntu", abstract=False, parent=None,
        dib_cmd="disk-image-create", elements=["ubuntu-minimal", "vm"],
        env_vars={"DIB_CHECKSUM": "1", "COUNT": "3"}, formats=None,
        keep_formats=None, delete_after_upload=False, pause=False,
        release="22.04", rebuild_age=86400, build_timeout=28800,
        username="zuul", python_path="auto", shell_type=None, metadata={})
    values.update(changes)
    return DiskImage(**values)


def test_command_with_qcow2():
    argv = dib.dib_command(diskimage(), ["raw", "qcow2"], "/img/ubuntu-ab")
    assert argv == [
        "disk-image-create", "-x", "-t", "qcow2,raw", "--checksum",
        "--no-tmpfs", "--qemu-img-options", "compat=0.10",
        "-o", "/img/ubuntu-ab", "ubuntu-minimal", "vm"]


def test_command_without_qcow2_and_custom_cmd():
    image = diskimage(dib_cmd="'/opt/my dib/create' --verbose",
                      elements=[])
    argv = dib.dib_command(image, ["vhd", "raw", "vhd"], "/img/x-1")
    assert argv == ["/opt/my dib/create", "--verbose", "-x", "-t",
                    "raw,vhd", "--checksum", "--no-tmpfs", "-o", "/img/x-1"]


def test_command_expands_package_dir():
    argv = dib.dib_command(diskimage(dib_cmd="%p/../tools/fake-dib"),
                           ["raw"], "/o")
    package = os.path.dirname(os.path.abspath(nodepool.__file__))
    assert argv[0] == package + "/../tools/fake-dib"


def test_environment():
    env = dib.dib_environment(diskimage(), "/img/ubuntu-ab", "/elements",
                              base_env={"PATH": "/bin", "COUNT": "1"})
    assert env == {"PATH": "/bin", "COUNT": "3", "DIB_CHECKSUM": "1",
                   "DIB_RELEASE": "22.04", "DIB_IMAGE_NAME": "ubuntu",
                   "DIB_IMAGE_FILENAME": "/img/ubuntu-ab",
                   "ELEMENTS_PATH": "/elements"}


def test_environment_defaults_to_process_env(monkeypatch):
    monkeypatch.setenv("SOME_DAEMON_VAR", "yes")
    env = dib.dib_environment(diskimage(release=""), "/o", None)
    assert env["SOME_DAEMON_VAR"] == "yes"
    assert env["DIB_RELEASE"] == ""
    assert "ELEMENTS_PATH" not in env or \
        env["ELEMENTS_PATH"] == os.environ.get("ELEMENTS_PATH")


def _logs(tmp_path, image, count):
    paths = []
    for i in range(count):
        path = tmp_path / ("%s-%032x.log" % (image, i))
        path.write_text("log %d" % i)
        os.utime(path, (1000 + i, 1000 + i))
        paths.append(path)
    return paths


def test_prune_build_logs(tmp_path):
    logs = _logs(tmp_path, "img", 5)
    other = _logs(tmp_path, "img-other", 2)
    unrelated = tmp_path / "img-notes.txt"
    unrelated.write_text("")
    removed = dib.prune_build_logs(str(tmp_path), "img", 3)
    assert sorted(removed) == sorted(str(p) for p in logs[:2])
    assert all(p.exists() for p in logs[2:] + other + [unrelated])


def test_prune_build_logs_keeps_one_and_can_be_disabled(tmp_path):
    logs = _logs(tmp_path, "img", 3)
    assert dib.prune_build_logs(str(tmp_path), "img", -1) == []
    assert all(p.exists() for p in logs)
    dib.prune_build_logs(str(tmp_path), "img", 0)
    assert [p.exists() for p in logs] == [False, False, True]
    assert dib.prune_build_logs(str(tmp_path / "missing"), "img", 1) == []


def _script(tmp_path, body):
    path = tmp_path / "script.py"
    path.write_text(body)
    return [sys.executable, str(path)]


def test_run_dib_logs_output_and_exit_code(tmp_path):
    argv = _script(tmp_path, "import os, sys\n"
                   "print('out', os.environ['X'])\n"
                   "print('err', file=sys.stderr)\nsys.exit(3)\n")
    log = tmp_path / "logs" / "b.log"
    result = dib.run_dib(argv, {"X": "42"}, str(log), timeout=60,
                         poll=0.01)
    assert result.rc == 3 and not result.timed_out
    text = log.read_text()
    assert text.startswith("Running: ")
    assert "out 42\n" in text and "err\n" in text
    assert text.endswith("Exit code: 3\n")


@pytest.fixture
def umask_022():
    """The usual umask, whatever the test runner's is."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_run_dib_log_is_private(tmp_path, umask_022):
    # DIB runs with -x: the log shows env-vars (secrets) in clear.
    argv = _script(tmp_path, "print('DIB_PASSWORD=hunter2')\n")
    log = tmp_path / "logs" / "builds" / "b.log"
    assert dib.run_dib(argv, {}, str(log), timeout=60, poll=0.01).rc == 0
    assert "hunter2" in log.read_text()
    assert log.stat().st_mode & 0o777 == 0o640
    assert log.parent.stat().st_mode & 0o777 == 0o750
    # An existing directory is left as the operator made it.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    log = shared / "c.log"
    assert dib.run_dib(argv, {}, str(log), timeout=60, poll=0.01).rc == 0
    assert shared.stat().st_mode & 0o777 == 0o755
    assert log.stat().st_mode & 0o777 == 0o640


def test_images_dir_is_private(tmp_path, umask_022):
    images = tmp_path / "images"
    dib.read_builder_id(str(images))
    assert images.stat().st_mode & 0o777 == 0o750
    assert not dib.world_accessible(str(images))
    images.chmod(0o751)
    assert dib.world_accessible(str(images))
    assert not dib.world_accessible(str(tmp_path / "nope"))


def test_run_dib_timeout(tmp_path):
    argv = _script(tmp_path, "import time\nprint('started', flush=True)\n"
                   "time.sleep(30)\n")
    log = tmp_path / "b.log"
    result = dib.run_dib(argv, dict(os.environ), str(log), timeout=0.3,
                         poll=0.01)
    assert result.rc == 1 and result.timed_out
    assert "timed out after 0.3s" in log.read_text()


def test_run_dib_stop_event(tmp_path):
    argv = _script(tmp_path, "import time\ntime.sleep(30)\n")
    stop = threading.Event()
    stop.set()
    result = dib.run_dib(argv, dict(os.environ), str(tmp_path / "b.log"),
                         timeout=60, stop_event=stop, poll=0.01)
    assert result.rc == 1 and result.stopped


def test_run_dib_missing_command(tmp_path):
    log = tmp_path / "b.log"
    result = dib.run_dib([str(tmp_path / "nope")], {}, str(log), timeout=5)
    assert result.rc == 127
    assert log.read_text().endswith("Exit code: 127\n")


def test_image_files(tmp_path):
    files = dib.ImageFiles(str(tmp_path), "ubuntu", "abc123")
    assert files.base == str(tmp_path / "ubuntu-abc123")
    assert not files.exists()
    (tmp_path / "ubuntu-abc123.qcow2").write_bytes(b"data")
    (tmp_path / "ubuntu-abc123.raw").write_bytes(b"data")
    (tmp_path / "ubuntu-abc123.raw.md5").write_text("f" * 32 + "  x\n")
    (tmp_path / "ubuntu-abc123.d").mkdir()
    (tmp_path / "ubuntu-abc1234.raw").write_bytes(b"other build")
    assert files.formats() == ["qcow2", "raw"]
    md5, sha256 = files.checksums("raw")
    assert md5 == "f" * 32
    assert sha256 == hashlib.sha256(b"data").hexdigest()
    assert (tmp_path / "ubuntu-abc123.raw.sha256").read_text().startswith(
        sha256)
    md5, _ = files.checksums("qcow2", create=False)
    assert md5 == hashlib.md5(b"data").hexdigest()
    assert not (tmp_path / "ubuntu-abc123.qcow2.md5").exists()
    files.remove_format("raw")
    assert files.formats() == ["qcow2"]
    files.remove_all()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ubuntu-abc1234.raw"]
    files.remove_all()  # nothing left: fine


def test_scan_images_dir(tmp_path):
    for name in ("ubuntu-ab12.qcow2", "ubuntu-ab12.qcow2.md5",
                 "ubuntu-ab12.d", "my-image-0000000001.raw",
                 "builder_id.txt", "fake-dib.pause", "notes-xyz.txt"):
        (tmp_path / name).write_text("")
    assert dib.scan_images_dir(str(tmp_path)) == [
        ("my-image", "0000000001"), ("ubuntu", "ab12")]
    assert dib.scan_images_dir(str(tmp_path / "missing")) == []


def test_builder_id_created_once(tmp_path):
    images = tmp_path / "images"
    first = dib.read_builder_id(str(images))
    assert str(uuid.UUID(first)) == first
    assert (images / "builder_id.txt").read_text() == first
    assert dib.read_builder_id(str(images)) == first


def test_free_mib(tmp_path):
    assert dib.free_mib(str(tmp_path)) > 0
    with pytest.raises(OSError):
        dib.free_mib(str(tmp_path / "missing"))
