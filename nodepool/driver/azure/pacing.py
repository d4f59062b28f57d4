# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""azure-core's retries of a call, paced by the provider's rate limiter.

azure-core retries a throttled (429) or failed ARM call by itself, inside
the SDK call the adapter made through its limiter.  Without help, the
limiter would never hear of the 429s and the retries would go around it.
:class:`LimiterPolicy` sits after azure-core's retry policy, so it sees
every attempt: it reports each 429 (with its ``Retry-After``) to the
limiter, and makes every attempt after the first wait on the limiter like
any other call.  (The first attempt waited already, in the adapter.)
"""

from typing import Optional

from azure.core.pipeline.policies import SansIOHTTPPolicy


def retry_after_seconds(value: Optional[str]) -> Optional[float]:
    """A ``Retry-After`` header in seconds; None when absent or given as
    an HTTP date (azure-core's own backoff covers that case)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None


class LimiterPolicy(SansIOHTTPPolicy):
    """Pace azure-core's retries through ``limiter`` and report its 429s.

    Give it to the clients as a per-retry policy
    (``per_retry_policies=[LimiterPolicy(limiter)]``).
    """

    def __init__(self, limiter):
        super().__init__()
        self.limiter = limiter

    def on_request(self, request) -> None:
        if request.context.get("retry_count", 0) > 0:
            self.limiter.wait()

    def on_response(self, request, response) -> None:
        http = response.http_response
        if http.status_code == 429:
            self.limiter.throttled(
                retry_after_seconds(http.headers.get("Retry-After")))
