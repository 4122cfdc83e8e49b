"""Territory health: the metric catalogue and definitions, drift rules, snapshots, the collector."""
