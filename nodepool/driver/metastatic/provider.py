# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The metastatic provider: the generic runtime plus the release pass.

nodepool 11 releases idle backing nodes from its leak listing; here the
launcher's cleanup pass calls :meth:`MetastaticAdapter.release_idle`
directly instead, since a metastatic provider has nothing that could
leak (its backing nodes are ordinary nodes of another provider).
"""

from nodepool.driver.statemachine.provider import StateMachineProvider


class MetastaticProvider(StateMachineProvider):
    """A :class:`StateMachineProvider` whose leak cleanup releases
    backing nodes."""

    def cleanup_leaked_resources(self, known_node_ids: set,
                                 known_uploads: set) -> int:
        self.adapter.release_idle()
        return 0
