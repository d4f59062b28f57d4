# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Validation problems and the error that carries them.

A problem names where in the file it is (a key path such as
``providers[1].pools[0].labels[2].flavor-name``), what was expected there and
what was found.  Found values that may be secret are redacted before they
ever reach a message.
"""

from dataclasses import dataclass

from nodepool.exceptions import ConfigError

REDACTED = "<redacted>"
_MAX_FOUND = 80


def format_path(path) -> str:
    """Render a sequence of keys and list indices as ``a.b[0].c``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += "[%d]" % part
        elif text:
            text += "." + str(part)
        else:
            text = str(part)
    return text or "(top level)"


def describe_value(value) -> str:
    """A short, single-line description of a found value."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        kind = "a mapping"
    elif isinstance(value, list):
        kind = "a list"
    else:
        kind = type(value).__name__
    text = repr(value)
    if len(text) > _MAX_FOUND:
        text = text[:_MAX_FOUND - 3] + "..."
    return "%s (%s)" % (text, kind)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration file."""

    path: tuple
    expected: str
    found: str

    def __str__(self):
        return "%s: expected %s; found %s" % (
            format_path(self.path), self.expected, self.found)


class ConfigValidationError(ConfigError):
    """A configuration file was read but does not validate.

    ``problems`` lists every problem found (at least one); ``filename`` is
    the file they belong to.  The message has one line per problem.
    """

    def __init__(self, filename, problems):
        self.filename = filename
        self.problems = tuple(problems)
        lines = ["%s: %s" % (filename, p) for p in self.problems]
        super().__init__("\n".join(lines))
