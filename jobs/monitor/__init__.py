"""``mobility monitor``: forecast accuracy against the backtests, job health and cost, recorded
in ops/monitor_checks, with alerts in ops/alerts (see :mod:`jobs.monitor.run`)."""
