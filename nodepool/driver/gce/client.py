# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The Compute Engine clients of one provider.

``google-cloud-compute`` (the maintained GAPIC client of the Compute API;
its transport is REST, JSON over HTTPS) rather than the discovery-based
``google-api-python-client`` that nodepool 11 uses, which is in
maintenance mode.  Both can be pointed at another endpoint; this one takes
it as ``client_options.api_endpoint`` (an ``http://`` endpoint included),
so tests run the real client against a loopback fake.

Credentials: Application Default Credentials (``google.auth.default()``:
``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's user credentials, or the
metadata server on a GCE VM) unless ``credentials`` are given.

Every method makes exactly one HTTP call (no client-side retries,
``retry=None``; the adapter retries through its rate limiter) and returns
the resource in GCE's wire format (camelCase dict), so the rest of the
driver reads the same JSON the REST API documents.  The clients are
thread-safe (one ``requests`` session each).
"""

from typing import Optional

# Seconds a call may take before the client gives up.
CALL_TIMEOUT = 60.0
PAGE_SIZE = 500


def as_dict(message) -> dict:
    """A compute_v1 message as a wire-format dict (unset fields left
    out)."""
    return type(message).to_dict(message, preserving_proto_field_name=False,
                                 use_integers_for_enums=False)


class GceClients:
    """The compute_v1 REST clients of one provider.

    :param credentials: ``google.auth`` credentials; None for Application
        Default Credentials.
    :param endpoint: the API endpoint (``https://compute.googleapis.com``
        when None).
    """

    def __init__(self, credentials=None, endpoint: Optional[str] = None,
                 timeout: float = CALL_TIMEOUT):
        # Imported here: the SDK is only needed once a provider runs.
        from google.api_core.client_options import ClientOptions
        from google.cloud import compute_v1

        self._types = compute_v1
        self.timeout = timeout
        options = ClientOptions(api_endpoint=endpoint) if endpoint else None
        args = dict(credentials=credentials, transport="rest",
                    client_options=options)
        self.instances = compute_v1.InstancesClient(**args)
        self.operations = compute_v1.ZoneOperationsClient(**args)
        self.machine_types = compute_v1.MachineTypesClient(**args)
        self.images = compute_v1.ImagesClient(**args)
        self.regions = compute_v1.RegionsClient(**args)

    def _kw(self) -> dict:
        return dict(retry=None, timeout=self.timeout)

    def close(self) -> None:
        for client in (self.instances, self.operations, self.machine_types,
                       self.images, self.regions):
            try:
                client.transport.close()
            except Exception:
                pass

    # Calls (one HTTP request each) ----------------------------------------

    def insert_instance(self, project: str, zone: str, body: dict) -> dict:
        """Send instances.insert; the zone operation as a dict."""
        resource = self._types.Instance.from_json(
            _json(body), ignore_unknown_fields=False)
        return as_dict(self.instances.insert_unary(
            project=project, zone=zone, instance_resource=resource,
            **self._kw()))

    def delete_instance(self, project: str, zone: str, name: str) -> dict:
        return as_dict(self.instances.delete_unary(
            project=project, zone=zone, instance=name, **self._kw()))

    def get_operation(self, project: str, zone: str, name: str) -> dict:
        return as_dict(self.operations.get(
            project=project, zone=zone, operation=name, **self._kw()))

    def list_instances_page(self, project: str, zone: str,
                            page_token: Optional[str] = None) -> tuple:
        """One page of instances.list: ``(items, next_page_token)``."""
        request = self._types.ListInstancesRequest(
            project=project, zone=zone, max_results=PAGE_SIZE,
            page_token=page_token or "")
        pager = self.instances.list(request=request, **self._kw())
        # The pager's first page is the answer already received; reading
        # its items must not fetch the next page.
        response = next(iter(pager.pages))
        return ([as_dict(i) for i in response.items],
                response.next_page_token or None)

    def get_machine_type(self, project: str, zone: str, name: str) -> dict:
        return as_dict(self.machine_types.get(
            project=project, zone=zone, machine_type=name, **self._kw()))

    def get_image_from_family(self, project: str, family: str) -> dict:
        return as_dict(self.images.get_from_family(
            project=project, family=family, **self._kw()))

    def get_region(self, project: str, region: str) -> dict:
        return as_dict(self.regions.get(project=project, region=region,
                                        **self._kw()))


def _json(body: dict) -> str:
    import json
    return json.dumps(body)
