# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Reaching the cluster: the API clients of one provider's context.

As in nodepool 11, a provider's ``context`` is looked up in the kubeconfig
(``KUBECONFIG``, else ``~/.kube/config``; None means its current
context); when there is no kubeconfig at all, nodepool runs inside the
cluster and uses the pod's service account (the token and CA the kubelet
mounts).  The environment is read when a provider starts, not when this
module is imported, so a launcher picks up a kubeconfig written later.
"""

import base64
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.config import incluster_config

DEFAULT_KUBECONFIG = "~/.kube/config"
#: (connect, read) seconds of every API call: the client waits forever by
#: default, which would hold an adapter worker for good on a hung server.
API_TIMEOUT = (10.0, 60.0)


class TimeoutApiClient(k8s.ApiClient):
    """An API client whose calls time out after ``timeout`` ((connect,
    read) seconds) unless the call gives its own ``_request_timeout``."""

    def __init__(self, configuration, timeout=API_TIMEOUT):
        super().__init__(configuration)
        self.timeout = timeout

    def call_api(self, *args, **kwargs):
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = self.timeout
        return super().call_api(*args, **kwargs)


@dataclass(frozen=True)
class InClusterPaths:
    """Where the service account's token and CA are mounted (tests point
    these elsewhere)."""

    token: str = incluster_config.SERVICE_TOKEN_FILENAME
    ca: str = incluster_config.SERVICE_CERT_FILENAME
    environ: Optional[dict] = field(default=None, compare=False)


@dataclass
class Cluster:
    """The clients and credentials of one context.

    ``token`` is the bearer token and ``ca`` the CA certificate
    (base64-encoded PEM, as a kubeconfig's ``certificate-authority-data``)
    of the credentials used; both may be None.  ``skiptls``: the server's
    certificate is not verified.
    """

    api_client: object
    host: str
    token: Optional[str]
    ca: Optional[str]
    skiptls: bool

    @property
    def core(self):
        return k8s.CoreV1Api(self.api_client)

    @property
    def rbac(self):
        return k8s.RbacAuthorizationV1Api(self.api_client)

    @property
    def custom(self):
        return k8s.CustomObjectsApi(self.api_client)


def kubeconfig_files(environ=None) -> list:
    """The kubeconfig files that exist and are not empty."""
    environ = os.environ if environ is None else environ
    path = environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
    files = [os.path.expanduser(p) for p in path.split(os.pathsep) if p]
    return [f for f in files if os.path.isfile(f) and os.path.getsize(f)]


def _token(conf) -> Optional[str]:
    for key in ("authorization", "BearerToken"):
        value = conf.api_key.get(key)
        if value:
            return value.split()[-1]
    return None


def _ca(conf) -> Optional[str]:
    if not conf.ssl_ca_cert:
        return None
    with open(conf.ssl_ca_cert, "rb") as f:
        return base64.b64encode(f.read()).decode()


def connect(context: Optional[str], in_cluster: InClusterPaths = None,
            log: logging.Logger = None, timeout=API_TIMEOUT) -> Cluster:
    """The clients of ``context``; their calls time out after ``timeout``
    (see :class:`TimeoutApiClient`).

    Raises the client library's ``ConfigException`` (an unknown context,
    a kubeconfig it cannot read, no in-cluster service account) or
    ``OSError`` (an unreadable CA file).
    """
    in_cluster = in_cluster or InClusterPaths()
    conf = k8s.Configuration()
    files = kubeconfig_files()
    if files:
        k8s_config.load_kube_config(
            config_file=os.pathsep.join(files), context=context,
            client_configuration=conf, persist_config=False)
    else:
        if log is not None:
            log.info("No kubeconfig; using the in-cluster service account")
        environ = in_cluster.environ
        loader = incluster_config.InClusterConfigLoader(
            token_filename=in_cluster.token, cert_filename=in_cluster.ca,
            environ=os.environ if environ is None else environ)
        loader.load_and_set(conf)
    return Cluster(api_client=TimeoutApiClient(conf, timeout),
                   host=conf.host,
                   token=_token(conf), ca=_ca(conf),
                   skiptls=not conf.verify_ssl)
