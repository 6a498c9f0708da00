"""User-facing errors: a problem with the input, said in words a user can act on.

The CLI prints these without a traceback and exits non-zero; anything else is a bug.
"""


class PoiseError(Exception):
    """A problem the user can fix (bad data, bad options). The message names it."""


class DataError(PoiseError):
    """The table cannot be used as given: unreadable, empty, bad target, too few rows."""


class SpecError(PoiseError):
    """The job options are inconsistent (unknown objective, costs without cost objective...)."""


class TooLargeError(DataError):
    """The input is over a configured size limit (bytes, rows or columns)."""
