"""Errors of the approval package, grouped by what the HTTP edge answers."""

from __future__ import annotations


class ApprovalError(Exception):
    """Base of the approval package's errors."""


class SlackNotConfiguredError(ApprovalError):
    """No (or a blank) signing secret: every Slack request is refused."""


class BadSignatureError(ApprovalError):
    """The request is not signed by Slack with our secret, or too old: answer 401."""


class MalformedPayloadError(ApprovalError):
    """The interaction payload is not one we understand: answer 400."""
