# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The loader against the whole config corpus (tests/configs)."""

import pytest

from nodepool.config import ConfigValidationError, load_config
from nodepool.config.errors import format_path
from nodepool.exceptions import ConfigError
from tests.configs import corpus

VALID = corpus.valid_scenarios()
INVALID = corpus.invalid_scenarios()


def test_corpus_is_not_empty():
    assert len(VALID) >= 8
    assert len(INVALID) >= 40
    for scenario in INVALID:
        assert scenario.error and scenario.message, scenario.path


@pytest.mark.parametrize("scenario", VALID, ids=lambda s: s.name)
def test_valid_file_loads(scenario):
    config = load_config(scenario.path, scenario.secure, env=scenario.env)
    # Objects compare by value and hash: loading twice gives equal configs.
    again = load_config(scenario.path, scenario.secure, env=scenario.env)
    assert config == again
    assert hash(config) == hash(again)


@pytest.mark.parametrize("scenario", INVALID, ids=lambda s: s.name)
def test_invalid_file_names_the_key(scenario):
    with pytest.raises(ConfigError) as info:
        load_config(scenario.path, scenario.secure, env=scenario.env)
    error = info.value
    if scenario.error == "(file)":
        assert not isinstance(error, ConfigValidationError)
        assert scenario.message in str(error)
        return
    assert isinstance(error, ConfigValidationError)
    matching = [p for p in error.problems
                if format_path(p.path) == scenario.error]
    assert matching, "no problem at %s in:\n%s" % (scenario.error, error)
    assert any(scenario.message in str(p) for p in matching), str(error)
    # The rendered message carries the path, expected and found parts.
    assert "%s: expected " % scenario.error in str(error)
    assert "; found " in str(error)
