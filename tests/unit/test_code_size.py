# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Size limits of the code in nodepool/: modules and classes stay small.

A module over MAX_MODULE_LINES lines or a class over MAX_CLASS_LINES lines
fails, so that an oversized piece is split by concern when it first grows
past the limit rather than years later.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "nodepool"

MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 400

# Modules (paths relative to the repository) allowed to exceed the limits
# for now, each with the reason.  Remove an entry once its split landed:
# test_allow_list_is_current fails for an entry that is no longer needed.
ALLOWED: dict = {}


def oversized(source: str, name: str) -> list:
    """Descriptions of what in ``source`` exceeds the limits (or [])."""
    problems = []
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES:
        problems.append("%s: module has %d lines (limit %d)"
                        % (name, lines, MAX_MODULE_LINES))
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.ClassDef):
            size = node.end_lineno - node.lineno + 1
            if size > MAX_CLASS_LINES:
                problems.append("%s: class %s has %d lines (limit %d)"
                                % (name, node.name, size, MAX_CLASS_LINES))
    return problems


def package_modules():
    root = PACKAGE.parent
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(root).as_posix(), path.read_text()


def test_modules_and_classes_within_limits():
    problems = []
    for name, source in package_modules():
        if name not in ALLOWED:
            problems.extend(oversized(source, name))
    assert problems == [], "split by concern:\n" + "\n".join(problems)


def test_allow_list_is_current():
    modules = dict(package_modules())
    stale = [name for name in ALLOWED
             if name not in modules or not oversized(modules[name], name)]
    assert stale == [], "remove these from ALLOWED: %s" % stale


def test_walk_sees_the_package():
    names = [name for name, _ in package_modules()]
    assert "nodepool/zk/models/node.py" in names
    assert len(names) > 50


def _class_source(lines: int) -> str:
    body = "".join("    x%d = %d\n" % (i, i) for i in range(lines - 1))
    return "class Big:\n" + body


@pytest.mark.parametrize("lines, expected", [
    (MAX_CLASS_LINES, []),
    (MAX_CLASS_LINES + 1,
     ["m.py: class Big has %d lines (limit %d)"
      % (MAX_CLASS_LINES + 1, MAX_CLASS_LINES)]),
])
def test_oversized_class(lines, expected):
    assert oversized(_class_source(lines), "m.py") == expected


def test_oversized_module_and_nested_class():
    nested = "def outer():\n" + "".join(
        "    " + line + "\n"
        for line in _class_source(MAX_CLASS_LINES + 1).splitlines())
    filler = "y = 1\n" * (MAX_MODULE_LINES - MAX_CLASS_LINES)
    problems = oversized(nested + filler, "m.py")
    assert problems == [
        "m.py: module has %d lines (limit %d)"
        % (MAX_MODULE_LINES + 2, MAX_MODULE_LINES),
        "m.py: class Big has %d lines (limit %d)"
        % (MAX_CLASS_LINES + 1, MAX_CLASS_LINES),
    ]
