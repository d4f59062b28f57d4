# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The documentation builds without a single Sphinx warning (what
``tox -e docs`` checks), so a broken reference fails the suite too."""

import os
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_docs_build_without_warnings(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q",
         "-b", "html", "-d", str(tmp_path / "doctrees"),
         os.path.join(TOP, "doc", "source"), str(tmp_path / "html")],
        capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "html" / "index.html").exists()
    for page in ("installation", "configuration", "operation", "cli",
                 "webapp", "developer", "drivers/aws", "drivers/static",
                 "drivers/openstack", "drivers/azure",
                 "drivers/kubernetes", "drivers/openshift",
                 "drivers/openshiftpods"):
        assert (tmp_path / "html" / (page + ".html")).exists(), page
