# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The configuration loader keeps secrets out of messages and refuses
settings that would silently weaken security or escape a directory."""

import logging
import os
import shutil
import subprocess
import sys

import pytest

from nodepool.config import ConfigWatcher, load_config
from nodepool.exceptions import ConfigError
from tests.configs import corpus

SECRET = "hunter2"
SCRIPT = os.path.join(os.path.dirname(sys.executable), "nodepool")
BROKEN_SECURE = os.path.join(corpus.INVALID_DIR, "secure_yaml_error.secure")


def _write_pair(tmp_path):
    main = tmp_path / "nodepool.yaml"
    main.write_text("labels: []\ndiskimages:\n  - name: ubuntu\n")
    secure = tmp_path / "secure.conf"
    secure.write_text("diskimages:\n  - name: ubuntu\n    env-vars:\n"
                      "      TOKEN: %s\n" % SECRET)
    return main, secure


def test_secure_yaml_error_names_position_only():
    scenario = corpus.read_scenario(
        os.path.join(corpus.INVALID_DIR, "secure_yaml_error.yaml"))
    with pytest.raises(ConfigError) as info:
        load_config(scenario.path, scenario.secure)
    message = str(info.value)
    assert "line 4, column 21" in message
    assert SECRET not in message and "sesame" not in message
    # Not hidden in the chained exception either (a --debug traceback).
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_main_file_yaml_error_still_quotes_the_line(tmp_path):
    main = tmp_path / "nodepool.yaml"
    main.write_text("labels:\n  - name: small: big\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(main))
    assert "small: big" in str(info.value)


def test_reload_log_has_no_secret(tmp_path, caplog):
    main, secure = _write_pair(tmp_path)
    watcher = ConfigWatcher(str(main), str(secure))
    watcher.load()
    shutil.copy(BROKEN_SECURE, secure)
    # A changed stamp is what triggers the reload; copy keeps no mtime.
    os.utime(secure, ns=(1, 1))
    with caplog.at_level(logging.ERROR, logger="nodepool.config"):
        config, changed = watcher.reload()
    assert not changed and config is watcher.config
    assert "Keeping the running configuration" in caplog.text
    assert "line 4, column 21" in caplog.text
    assert SECRET not in caplog.text and "sesame" not in caplog.text


@pytest.mark.skipif(not os.path.exists(SCRIPT),
                    reason="console script not installed")
def test_config_validate_console_has_no_secret(tmp_path):
    main, secure = _write_pair(tmp_path)
    shutil.copy(BROKEN_SECURE, secure)
    result = subprocess.run(
        [SCRIPT, "--debug", "-c", str(main), "-s", str(secure),
         "config-validate"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "line 4, column 21" in output
    assert SECRET not in output and "sesame" not in output


def test_secure_empty_zookeeper_tls_keeps_nothing_quiet():
    scenario = corpus.read_scenario(
        os.path.join(corpus.INVALID_DIR, "secure_zookeeper_tls_null.yaml"))
    with pytest.raises(ConfigError) as info:
        load_config(scenario.path, scenario.secure)
    message = str(info.value)
    assert message.startswith(scenario.secure + ": zookeeper-tls: ")
    assert "would turn off the main file's TLS" in message
    assert "found null" in message


@pytest.mark.parametrize("name", ["../../x", "..", ".", "a/b", "x\0y", ""])
def test_path_names_refused(tmp_path, name):
    path = tmp_path / "nodepool.yaml"
    quoted = name.replace("\0", "\\0")
    path.write_text('labels:\n  - name: "%s"\ndiskimages:\n'
                    '  - name: "%s"\n' % (quoted, quoted))
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    text = str(info.value)
    assert "labels[0].name: expected a name usable in a path" in text
    assert "diskimages[0].name: expected a name usable in a path" in text


def test_dots_inside_names_accepted(tmp_path):
    path = tmp_path / "nodepool.yaml"
    path.write_text("labels:\n  - name: ubuntu-22.04\ndiskimages:\n"
                    "  - name: ubuntu-22.04\n  - name: ..hidden\n")
    config = load_config(str(path))
    assert set(config.diskimages) == {"ubuntu-22.04", "..hidden"}
