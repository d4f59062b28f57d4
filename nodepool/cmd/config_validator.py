# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""``nodepool config-validate``: check a config the way the daemons load it.

There is deliberately no separate validation code: this runs the loader
(:func:`nodepool.config.load_config`) and reports its errors, so what
passes here is exactly what the launcher and builder accept.
"""

import sys

from nodepool.config import load_config
from nodepool.exceptions import ConfigError


class ConfigValidator:
    """Validate ``config_path`` (and optionally a secure file)."""

    def __init__(self, config_path, secure_path=None):
        self.config_path = config_path
        self.secure_path = secure_path
        self.config = None
        self.error = None

    def validate(self, env=None, stream=None) -> int:
        """Return 0 when valid, else 1 after writing the problems.

        Problems go to ``stream`` (default stderr), one per line, each
        naming the file, the key path, what was expected and what was found.
        """
        stream = stream if stream is not None else sys.stderr
        try:
            self.config = load_config(self.config_path, self.secure_path,
                                      env=env)
        except ConfigError as exc:
            self.error = exc
            stream.write("Configuration is invalid:\n%s\n" % exc)
            return 1
        return 0
