"""The rebalancer: the fewest account moves back into band, proven by HiGHS; curve, waves, rationale."""
