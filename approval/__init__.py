"""Approval of proposals: Slack (signatures, payloads, Block Kit, handlers), CLI decisions, write-back."""
