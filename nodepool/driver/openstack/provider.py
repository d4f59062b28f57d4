# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The OpenStack provider runtime: the state-machine provider plus the
OpenStack-only leak cleanup of DOWN ports and unattached floating IPs.

Those resources carry no nodepool metadata, so the framework's
metadata-based leak detection cannot see them; they are cleaned on every
leak-cleanup pass instead, with their own metrics (``leaked.ports``,
``leaked.floatingips``).
"""

from nodepool.driver.statemachine.provider import StateMachineProvider


class OpenStackProvider(StateMachineProvider):

    def cleanup_leaked_resources(self, known_node_ids: set,
                                 known_uploads: set) -> int:
        deleted = super().cleanup_leaked_resources(known_node_ids,
                                                   known_uploads)
        for plural, cleanup in (("ports", self.adapter.cleanup_down_ports),
                                ("floatingips",
                                 self.adapter.cleanup_floating_ips)):
            try:
                count = cleanup()
            except Exception:
                self.log.exception("Cleaning up leaked %s failed", plural)
                continue
            if count and self.services.stats is not None:
                self.services.stats.record_leaked(self.name, plural, count)
            deleted += count
        return deleted
