# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""What every ``nodepool`` subcommand shares: its :class:`Context`, the
:class:`CommandError` it raises to fail with one line, table output and a
logger that keeps tracebacks out of the way."""

import sys

from nodepool import status

# How long delete and hold wait for a node lock (as nodepool does).
LOCK_TIMEOUT = 5


class CommandError(Exception):
    """A failure reported as one line on stderr (exit status 1)."""


class Context:
    """What a subcommand works with: arguments, config and stores.

    ``lock_timeout``: seconds ``hold`` and ``delete`` wait for a node's
    lock.
    """

    def __init__(self, args, config=None, zk_client=None,
                 lock_timeout: float = LOCK_TIMEOUT):
        self.args = args
        self.config = config
        self.zk_client = zk_client
        self.lock_timeout = lock_timeout
        if zk_client is not None:
            from nodepool.zk.images import ImageStore
            from nodepool.zk.nodes import NodeStore
            from nodepool.zk.requests import RequestStore
            self.nodes = NodeStore(zk_client)
            self.requests = RequestStore(zk_client)
            self.images = ImageStore(zk_client)


def print_table(listing, fields=None) -> None:
    headers, rows = listing
    print(status.render_table(headers, rows, fields))


class OneLineLog:
    """A logger whose ``exception()`` logs the message without the
    traceback, so a failing ``delete --now`` or cloud listing stays
    readable (``--debug`` uses the real logger)."""

    def __init__(self, logger):
        self._logger = logger

    def exception(self, msg, *args, **kwargs):
        kwargs.pop("exc_info", None)
        error = sys.exc_info()[1]
        if error is not None:
            msg = "%s: %s" % (msg, str(error) or type(error).__name__)
        self._logger.error(msg, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._logger, name)
