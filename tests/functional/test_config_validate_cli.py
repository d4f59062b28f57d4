# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""``nodepool -c FILE config-validate`` on the same corpus as the loader.

Run both in-process (``main()``) and through the installed console script,
so the validator and the loader cannot drift apart.
"""

import os
import subprocess
import sys

import pytest

from nodepool.cmd import nodepoolcmd
from tests.configs import corpus

VALID = corpus.valid_scenarios()
INVALID = corpus.invalid_scenarios()
SCRIPT = os.path.join(os.path.dirname(sys.executable), "nodepool")


def _args(scenario):
    args = ["-c", scenario.path]
    if scenario.secure:
        args += ["-s", scenario.secure]
    return args + ["config-validate"]


def _run_script(scenario):
    env = dict(os.environ, **scenario.env)
    return subprocess.run([SCRIPT] + _args(scenario), env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def scenario_env(monkeypatch):
    def apply(scenario):
        for name, value in scenario.env.items():
            monkeypatch.setenv(name, value)
    return apply


@pytest.mark.parametrize("scenario", VALID, ids=lambda s: s.name)
def test_main_accepts_valid(scenario, scenario_env, capsys):
    scenario_env(scenario)
    assert nodepoolcmd.main(_args(scenario)) == 0
    assert "is valid" in capsys.readouterr().out


@pytest.mark.parametrize("scenario", INVALID, ids=lambda s: s.name)
def test_main_rejects_invalid(scenario, scenario_env, capsys):
    scenario_env(scenario)
    assert nodepoolcmd.main(_args(scenario)) == 1
    err = capsys.readouterr().err
    if scenario.error != "(file)":
        assert "%s: expected " % scenario.error in err
    assert scenario.message in err


@pytest.mark.skipif(not os.path.exists(SCRIPT),
                    reason="console script not installed")
@pytest.mark.parametrize("scenario", VALID, ids=lambda s: s.name)
def test_script_accepts_valid(scenario):
    result = _run_script(scenario)
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout


@pytest.mark.skipif(not os.path.exists(SCRIPT),
                    reason="console script not installed")
@pytest.mark.parametrize("scenario", INVALID, ids=lambda s: s.name)
def test_script_rejects_invalid(scenario):
    result = _run_script(scenario)
    assert result.returncode != 0
    if scenario.error != "(file)":
        assert "%s: expected " % scenario.error in result.stderr
    assert scenario.message in result.stderr
    assert "Traceback" not in result.stderr


def test_global_options_before_subcommand():
    args = nodepoolcmd.build_parser().parse_args(
        ["-c", "/x.yaml", "-s", "/s.conf", "config-validate"])
    assert (args.config, args.secure, args.command) == (
        "/x.yaml", "/s.conf", "config-validate")
    defaults = nodepoolcmd.build_parser().parse_args(["config-validate"])
    assert defaults.config == "/etc/nodepool/nodepool.yaml"


def test_missing_file(tmp_path, capsys):
    missing = str(tmp_path / "nope.yaml")
    assert nodepoolcmd.main(["-c", missing, "config-validate"]) == 1
    assert "not found" in capsys.readouterr().err


def test_explicit_secure_file_must_exist(tmp_path, capsys):
    args = ["-c", corpus.valid_path("minimal"), "-s",
            str(tmp_path / "secure.conf"), "config-validate"]
    assert nodepoolcmd.main(args) == 1
    assert "secure.conf: config file not found" in capsys.readouterr().err


def test_secrets_not_printed(capsys):
    scenario = corpus.read_scenario(
        os.path.join(corpus.INVALID_DIR, "secure_bad_key_type.yaml"))
    assert nodepoolcmd.main(_args(scenario)) == 1
    err = capsys.readouterr().err
    assert "a-string-secret" not in err
    assert "<redacted>" in err


def test_no_subcommand_prints_help(capsys):
    assert nodepoolcmd.main([]) == 1
    assert "config-validate" in capsys.readouterr().out
