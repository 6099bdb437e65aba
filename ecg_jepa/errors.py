"""The one family of exceptions for bad input: what a user passed (a tensor, a file, an option) cannot be
used, and the message names the problem and the fix. The command line prints these as one line and exits
with status 2; any other exception is a bug and keeps its traceback.

They subclass the built-in types code already catches (``ValueError``, ``TypeError``,
``FileNotFoundError``), so ``except ValueError`` keeps working.
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad input: a value, shape, file content or option that cannot be used."""


class InputTypeError(InputError, TypeError):
    """Bad input of the wrong type or dtype."""


class MissingInputError(InputError, FileNotFoundError):
    """A file or folder the user named does not exist."""
