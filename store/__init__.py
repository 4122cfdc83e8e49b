"""Postgres storage shared by connectors, monitor and rebalancer: models, engines, bulk loading."""
