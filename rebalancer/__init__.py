"""The rebalancer: the optimiser, rationale and proposal state machine arrive with their issue."""
