# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Configuration: schema, immutable models and the loader.

Public entry point: :func:`load_config` (raises
:class:`nodepool.exceptions.ConfigError`).
"""

from nodepool.config.errors import ConfigValidationError, Problem
from nodepool.config.loader import (
    DEFAULT_CONFIG_PATH, DEFAULT_SECURE_PATH, ConfigWatcher,
    changed_providers, default_secure_path, load_config)
from nodepool.config.models import Config, DiskImage, FrozenDict, Label

__all__ = [
    "Config", "ConfigValidationError", "ConfigWatcher", "DEFAULT_CONFIG_PATH",
    "DEFAULT_SECURE_PATH", "DiskImage", "FrozenDict", "Label", "Problem",
    "changed_providers", "default_secure_path", "load_config",
]
