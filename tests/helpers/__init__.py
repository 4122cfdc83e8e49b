"""What several test modules share; test modules import from here, never from one another.

``processes``: the ``territory`` CLI as a subprocess, free ports, waiting for a condition, external
tools. ``records``: CRM rows, CSV exports and a scripted connector for the sync tests. ``seeding``: a
small org with snapshots, drift, syncs, job runs and proposals for the collector and Prometheus.
"""
