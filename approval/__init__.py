"""Approval of proposals: Slack request verification, Block Kit messages, payload parsing (pure code)."""
