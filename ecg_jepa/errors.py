"""The exceptions users see as one line. :class:`InputError` and its kin, bad input: what a user passed (a
tensor, a file, an option) cannot be used, and the message names the problem and the fix (the command line
exits with status 2). :class:`RunError`: a run stopped by something outside the code (exit status 1). Any
other exception is a bug and keeps its traceback.

The input errors subclass the built-in types code already catches (``ValueError``, ``TypeError``,
``FileNotFoundError``), so ``except ValueError`` keeps working.
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad input: a value, shape, file content or option that cannot be used."""


class InputTypeError(InputError, TypeError):
    """Bad input of the wrong type or dtype."""


class MissingInputError(InputError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class RunError(RuntimeError):
    """A run could not go on for a reason outside the code and the input: a rank of the group stopped
    answering, a checkpoint could not be written. The command line prints it as one line, exit status 1."""
