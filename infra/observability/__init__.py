"""Watching the engine from outside: the Prometheus scrape config (``scrape_config.py``) and the Grafana dashboard
(``dashboard.py``, built with grafanalib) over the worker's and the API's ``/metrics``. The rendered defaults are
shipped beside them: ``prometheus.yml`` and ``grafana/thaw.json``."""
