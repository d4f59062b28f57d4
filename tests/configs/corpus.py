# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The config corpus: one scenario per YAML file, expectations in headers.

Header comment lines at the top of a file (``# key: value``):

* ``error``: the key path of the expected problem (invalid files only);
  ``(file)`` for errors not tied to a key (YAML syntax);
* ``message``: a fragment the reported problem must contain;
* ``env``: ``NAME=value`` added to the environment used for loading;
* ``secure``: a secure file next to it, merged over the main file.
"""

import dataclasses
import os

HERE = os.path.dirname(os.path.abspath(__file__))
VALID_DIR = os.path.join(HERE, "valid")
INVALID_DIR = os.path.join(HERE, "invalid")


@dataclasses.dataclass
class Scenario:
    path: str
    error: str | None = None
    message: str | None = None
    env: dict = dataclasses.field(default_factory=dict)
    secure: str | None = None

    @property
    def name(self):
        return os.path.splitext(os.path.basename(self.path))[0]


def read_scenario(path):
    scenario = Scenario(path)
    with open(path) as f:
        for line in f:
            if not line.startswith("# "):
                break
            key, sep, value = line[2:].partition(":")
            if not sep:
                continue
            value = value.strip()
            if key == "env":
                name, _, env_value = value.partition("=")
                scenario.env[name] = env_value
            elif key == "secure":
                scenario.secure = os.path.join(os.path.dirname(path), value)
            elif key in ("error", "message"):
                setattr(scenario, key, value)
    return scenario


def scenarios(directory):
    return [read_scenario(os.path.join(directory, name))
            for name in sorted(os.listdir(directory))
            if name.endswith(".yaml")]


def valid_scenarios():
    return scenarios(VALID_DIR)


def invalid_scenarios():
    return scenarios(INVALID_DIR)


def valid_path(name):
    return os.path.join(VALID_DIR, name + ".yaml")
