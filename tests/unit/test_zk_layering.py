# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Only nodepool/zk/ talks to kazoo: everything else goes through the
stores, caches and client wrapper there.

Outside nodepool/zk/ the source may import kazoo's exceptions (to catch
what the stores let through) but may not reach a kazoo client: no
``<anything>.kazoo`` attribute, no call on a name ``kazoo``, no import of
other kazoo modules.
"""

import ast
import pathlib

import nodepool

PACKAGE = pathlib.Path(nodepool.__file__).parent
ZK_LAYER = PACKAGE / "zk"
ALLOWED_IMPORTS = ("kazoo.exceptions",)


def kazoo_uses(source: str) -> list:
    """``(line, what)`` of every direct kazoo use in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr == "kazoo":
            found.append((node.lineno, "attribute .kazoo"))
        elif (isinstance(node, ast.Call)
              and isinstance(node.func, ast.Attribute)
              and isinstance(node.func.value, ast.Name)
              and node.func.value.id == "kazoo"):
            found.append((node.lineno, "call kazoo.%s()" % node.func.attr))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "kazoo" and \
                        alias.name not in ALLOWED_IMPORTS:
                    found.append((node.lineno, "import %s" % alias.name))
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.module.split(".")[0] == "kazoo" and \
                node.module not in ALLOWED_IMPORTS:
            found.append((node.lineno, "from %s import" % node.module))
    return sorted(found)


def test_scanner_finds_each_kind_of_use():
    source = "\n".join([
        "from kazoo.exceptions import NoNodeError",  # allowed
        "import kazoo.exceptions",                    # allowed
        "stat = self.services.requests.kazoo.exists(path)",
        "kazoo.delete(path, recursive=True)",
        "client = zk_client.kazoo",
        "from kazoo.recipe.lock import Lock",
        "import kazoo.client",
        "kazoo_count = len(nodes)",                    # not kazoo
    ])
    assert kazoo_uses(source) == [
        (3, "attribute .kazoo"), (4, "call kazoo.delete()"),
        (5, "attribute .kazoo"), (6, "from kazoo.recipe.lock import"),
        (7, "import kazoo.client")]


def test_no_kazoo_outside_the_zookeeper_layer():
    offenders = []
    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        if ZK_LAYER in path.parents:
            continue
        checked += 1
        for line, what in kazoo_uses(path.read_text()):
            offenders.append("%s:%d: %s" % (
                path.relative_to(PACKAGE.parent), line, what))
    assert checked > 50  # the walk found the package
    assert offenders == []
