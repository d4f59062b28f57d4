# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Leak cleanup of one provider: cloud resources tagged with nodepool
metadata whose node or image upload no longer exists."""

import logging
from typing import Optional


class LeakSweeper:
    """Finds and deletes a provider's leaked resources.

    A resource is deleted only when two consecutive :meth:`sweep` passes
    found it leaked: a node or upload record written just after the
    caller listed the known ones must not cost its instance.

    :param name: the provider's name (resources tagged with another
        ``nodepool_provider_name`` are never touched).
    :param adapter: the driver's adapter (``list_resources``,
        ``delete_resource``).
    :param services: the launcher's services; their ``stats`` (may be
        None) get the ``leaked`` metrics.

    Not thread-safe: one thread (the launcher's cleanup thread) sweeps.
    """

    def __init__(self, name: str, adapter, services,
                 log: Optional[logging.Logger] = None):
        self.name = name
        self.adapter = adapter
        self.services = services
        self.log = log or logging.getLogger(
            "nodepool.driver.%s.leaks" % name)
        self._possibly_leaked: set = set()

    def _leak_key(self, resource, known_node_ids: set,
                  known_uploads: set) -> Optional[tuple]:
        """The resource's identity if it is ours and leaked, else None."""
        meta = resource.metadata or {}
        if meta.get("nodepool_provider_name") != self.name:
            return None
        node_id = meta.get("nodepool_node_id")
        build_id = meta.get("nodepool_build_id")
        upload_id = meta.get("nodepool_upload_id")
        if node_id is not None:
            if node_id in known_node_ids:
                return None
        elif build_id is not None and upload_id is not None:
            if "%s-%s" % (build_id, upload_id) in known_uploads:
                return None
        else:
            return None
        return (resource.type, resource.id, node_id, build_id, upload_id)

    def sweep(self, known_node_ids: set, known_uploads: set) -> int:
        """One pass: delete resources found leaked by this pass and the
        previous one; remember the rest for the next pass.

        ``known_uploads`` holds ``"<build_id>-<upload_id>"`` strings.
        Returns the number of resources deleted.  A failing delete is
        logged and tried again on the next pass.
        """
        leaked = set()
        deleted = 0
        for resource in self.adapter.list_resources():
            key = self._leak_key(resource, known_node_ids, known_uploads)
            if key is None:
                continue
            leaked.add(key)
            if key not in self._possibly_leaked:
                continue
            try:
                self.log.info("Deleting leaked %s %s", resource.type,
                              resource.id)
                self.adapter.delete_resource(resource)
                deleted += 1
                if self.services.stats is not None:
                    self.services.stats.record_leaked(
                        self.name, resource.plural_metric_name)
            except Exception:
                self.log.exception("Deleting leaked %r failed", resource)
        self._possibly_leaked = leaked
        return deleted
