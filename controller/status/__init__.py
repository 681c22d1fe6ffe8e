"""What the running controller shows: its state, its metrics and the stats endpoint.

Owns: the fleet state folded from the bus (fleetstate, pure; a batch cluster's queue and nodes
by state in queueview), the Prometheus metrics (metrics), the HTTP server behind /status,
/metrics, /healthz and the page (stats, static/). The Stats actor that runs them is actors.stats.
May import: controller.config, controller.messages, controller.runtime.
"""
