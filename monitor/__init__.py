"""Territory health: metric definitions, drift rules, snapshots and the Prometheus collector."""
