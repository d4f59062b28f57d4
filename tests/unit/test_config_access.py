# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Config objects are read by attribute: defaults live in the schema only.

``getattr(config, "key", default)`` hides a second default (which drifted
from the schema's before: a launch timeout of 3600 and a boot timeout of 60
whatever the driver said) and lets a typo pass silently.  The scan below
fails when such a call on something named like a config object comes back
to ``nodepool/``.  A key that only some drivers have is a property of the
base class (see ``nodepool/driver/base.py``) or a field of the shared cloud
layer (``nodepool/driver/cloud.py``).
"""

import ast
import os
import textwrap

import nodepool

PACKAGE = os.path.dirname(os.path.abspath(nodepool.__file__))

# The last name of the object expression (``self.provider.config`` ->
# ``config``) that marks a provider/pool/label/image config.
CONFIG_NAMES = frozenset({
    "config", "provider_config", "pool_config", "label_config", "pool",
    "label", "image", "diskimage", "provider_image", "cloud_image",
    "provider", "webapp",
})

# (file relative to nodepool/, function): calls on objects that are named
# like config but are not.
NOT_CONFIG = {
    # ZooKeeper pool component records, whose JSON may lack the key.
    ("stats.py", "_pool_fields"),
    ("status.py", "label_list"),
}


def _last_name(node):
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def defaulted_config_getattrs(source: str, filename: str = "<source>"):
    """``(line, function, text)`` of every ``getattr(x, key, default)``
    whose ``x`` is named like a config object."""
    found = []

    def visit(node, function):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if (isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "getattr"
                and len(node.args) + len(node.keywords) >= 3
                and _last_name(node.args[0]) in CONFIG_NAMES):
            found.append((node.lineno, function,
                          ast.get_source_segment(source, node)))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(source, filename), None)
    return found


def test_the_scan_finds_defaulted_getattr_on_config_names():
    source = textwrap.dedent('''
        def launch(self, pool, request):
            timeout = getattr(self.config, "launch_timeout", 3600)
            zones = getattr(pool, "availability_zones", None)
            cloud = getattr(self.provider.config, "cloud_name", None)
            request_id = getattr(request, "id", None)
            name = getattr(pool, "name")
    ''')
    found = defaulted_config_getattrs(source)
    assert [(line, function) for line, function, _ in found] == [
        (3, "launch"), (4, "launch"), (5, "launch")]
    assert found[0][2] == 'getattr(self.config, "launch_timeout", 3600)'


def test_no_getattr_with_a_default_on_config_objects():
    offenders = []
    for directory, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, PACKAGE)
            with open(path) as f:
                source = f.read()
            for line, function, text in defaulted_config_getattrs(
                    source, path):
                if (relative, function) not in NOT_CONFIG:
                    offenders.append("nodepool/%s:%d %s" % (
                        relative, line, text))
    assert offenders == []
