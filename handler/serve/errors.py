"""The one error type of server control."""

from __future__ import annotations


class ServeError(RuntimeError):
    """Starting or stopping failed; the message says why and what to do."""
