"""Operating the bot: control API, Prometheus metrics, the preflight check, logging."""
