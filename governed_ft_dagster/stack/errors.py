"""Errors of the local stack; each message is one sentence that names the fix."""


class StackError(RuntimeError):
    """The local stack cannot do what was asked."""
