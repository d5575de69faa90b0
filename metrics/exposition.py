"""Serving the metrics in the Prometheus text format: a small HTTP server of its own for processes
without a web server (the worker, the analytics service), an ASGI app for the API to mount."""

from __future__ import annotations

import logging

from prometheus_client import REGISTRY, make_asgi_app, start_http_server
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger("switchboard.metrics")


def serve_metrics(host: str, port: int, process: str, registry: CollectorRegistry = REGISTRY) -> bool:
    """Serve /metrics on host:port in a daemon thread; False (with a warning) when off or the port is taken.

    A worker must not refuse to move messages because its metrics port is busy (two workers on one
    host with the same setting): it says so loudly and runs unwatched.
    """
    if port == 0:
        log.info("%s: metrics not served (port 0)", process)
        return False
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.error("%s: cannot serve metrics on %s:%d (%s); set SWITCHBOARD_%sMETRICS_PORT to a free port",
                  process, host, port, exc.strerror or exc, "ANALYTICS_" if process == "analytics" else "")
        return False
    log.info("%s: metrics at http://%s:%d/metrics", process, host, port)
    return True


def metrics_asgi_app(registry: CollectorRegistry = REGISTRY) -> object:
    """The ASGI app answering a scrape with every metric of this process."""
    return make_asgi_app(registry=registry)
