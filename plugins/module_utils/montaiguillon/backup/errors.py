"""The one error every part of the backup library raises: a message fit for an operator.

Messages never hold a password, nor a command line that holds one.
"""

from __future__ import annotations


class BackupError(Exception):
    """A failure explained for the operator (never holds a secret)."""
