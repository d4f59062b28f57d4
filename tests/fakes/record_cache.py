# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""A dict standing in for a tree cache where a test wants fixed records."""


class StaticCache:
    """The duck-typed cache interface the stores read (``get``, ``values``),
    over a fixed set of records keyed by their ``id``."""

    def __init__(self, records):
        self.records = {r.id: r for r in records}

    def get(self, object_id):
        return self.records.get(object_id)

    def values(self):
        return list(self.records.values())
