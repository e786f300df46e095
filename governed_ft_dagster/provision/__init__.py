"""Provisioning of the production deployment: AWS resources (`aws`) and Unity Catalog objects (`catalog`)."""

from __future__ import annotations


class ProvisionError(RuntimeError):
    """A provisioning step failed; the message is one sentence naming the cause and the fix."""


__all__ = ["ProvisionError"]
