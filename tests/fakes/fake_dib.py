# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""A stand-in for ``disk-image-create`` used as the builder's ``dib-cmd``.

Run it as ``<python> tests/fakes/fake_dib.py`` (see :data:`DIB_CMD`).  It
understands the options the builder passes (``-x``, ``-t``,
``--checksum``, ``--no-tmpfs``, ``--qemu-img-options``, ``-o``; anything
else starting with ``-`` is an error, exit 2), then:

1. records its argv and environment as JSON in
   ``$FAKE_DIB_RECORD_DIR/<basename of -o>.json`` when that is set;
2. waits while ``<dir of -o>/fake-dib.pause`` exists (tests freeze a
   build in progress with it);
3. writes ``<out>.<type>`` (small data) for each requested type (default
   ``qcow2``), with ``.md5`` and ``.sha256`` files unless
   ``FAKE_DIB_NO_CHECKSUMS`` is set, and the ``<out>.d`` directory;
4. exits with ``FAKE_DIB_FAIL`` as status when it is set to a number
   other than 0 (the files are already written, as a real failure could
   leave them), else 0.
"""

import hashlib
import json
import os
import sys
import time

DIB_CMD = "%s %s" % (sys.executable, os.path.abspath(__file__))


def parse(argv):
    opts = {"types": ["qcow2"], "out": None, "checksum": False,
            "qemu": None, "x": False, "no_tmpfs": False}
    elements = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "-x":
            opts["x"] = True
        elif arg == "-t":
            i += 1
            opts["types"] = argv[i].split(",")
        elif arg == "-o":
            i += 1
            opts["out"] = argv[i]
        elif arg == "--checksum":
            opts["checksum"] = True
        elif arg == "--no-tmpfs":
            opts["no_tmpfs"] = True
        elif arg == "--qemu-img-options":
            i += 1
            opts["qemu"] = argv[i]
        elif arg.startswith("-"):
            raise ValueError("unknown option %s" % arg)
        else:
            elements.append(arg)
        i += 1
    if not opts["out"]:
        raise ValueError("-o is required")
    return opts, elements


def main(argv):
    print("fake-dib called with: %s" % " ".join(argv))
    try:
        opts, elements = parse(argv)
    except (ValueError, IndexError) as e:
        print("fake-dib: %s" % e)
        return 2
    out = opts["out"]
    record_dir = os.environ.get("FAKE_DIB_RECORD_DIR")
    if record_dir:
        os.makedirs(record_dir, exist_ok=True)
        path = os.path.join(record_dir, os.path.basename(out) + ".json")
        with open(path, "w") as f:
            json.dump({"argv": argv, "env": dict(os.environ),
                       "elements": elements, "types": opts["types"]}, f)
    pause = os.path.join(os.path.dirname(out), "fake-dib.pause")
    while os.path.exists(pause):
        time.sleep(0.02)
    data = ("fake image %s\n" % os.path.basename(out)).encode("utf8")
    for image_type in opts["types"]:
        path = "%s.%s" % (out, image_type)
        with open(path, "wb") as f:
            f.write(data)
        if not os.environ.get("FAKE_DIB_NO_CHECKSUMS"):
            with open(path + ".md5", "w") as f:
                f.write(hashlib.md5(data).hexdigest() + "  -\n")
            with open(path + ".sha256", "w") as f:
                f.write(hashlib.sha256(data).hexdigest() + "  -\n")
    os.makedirs(out + ".d", exist_ok=True)
    print("fake-dib wrote %s" % ",".join(opts["types"]))
    fail = os.environ.get("FAKE_DIB_FAIL", "0")
    try:
        return int(fail)
    except ValueError:
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
