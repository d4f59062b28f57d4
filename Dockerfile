# Images for the nodepool CLI and its two daemons:
#   docker build --target nodepool-launcher -t nodepool-launcher .
FROM python:3.11-slim-bookworm AS nodepool
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssh-client \
    && rm -rf /var/lib/apt/lists/*
COPY . /src
# The daemons' defaults: pid file /var/run/nodepool/<app>.pid, log files
# (when daemonized) and build logs under /var/log/nodepool; the nodepool
# user's home is /var/lib/nodepool.  All writable by that user.
RUN pip install --no-cache-dir /src && rm -rf /src \
    && useradd -m -d /var/lib/nodepool nodepool \
    && mkdir -p /etc/nodepool /var/log/nodepool /var/run/nodepool \
       /var/lib/nodepool \
    && chown nodepool:nodepool /var/log/nodepool /var/run/nodepool \
       /var/lib/nodepool
USER nodepool
ENTRYPOINT ["nodepool"]

FROM nodepool AS nodepool-launcher
ENTRYPOINT ["nodepool-launcher", "-f"]

FROM nodepool AS nodepool-builder
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       qemu-utils kpartx debootstrap git sudo \
    && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir diskimage-builder
ENTRYPOINT ["nodepool-builder", "-f"]
