"""User-facing errors: a problem with the input, said in words a user can act on.

The CLI prints these without a traceback and exits non-zero; anything else is a bug. Each kind says what
went wrong, not how to answer it: the API maps the kinds to HTTP statuses in one table
(`pipelines.api.errors.STATUS`), so no caller chooses a status by reading a message.
"""

from __future__ import annotations

from typing import Any


class PoiseError(Exception):
    """A problem the user can fix (bad data, bad options). The message names it."""

    def details(self) -> dict[str, Any]:
        """Data an API answer carries besides the message (`detail`); none by default."""
        return {}


class DataError(PoiseError):
    """The table cannot be used as given: unreadable, empty, bad target, too few rows."""


class SpecError(PoiseError):
    """The job options are inconsistent (unknown objective, costs without cost objective...)."""


class TooLargeError(DataError):
    """The input is over a configured size limit (bytes, rows or columns)."""


class NotFound(PoiseError):
    """What the caller names (a job, a drift check, a model, a version, a file) does not exist."""


class AmbiguousId(PoiseError):
    """An id prefix that matches more than one row; `matches` holds their ids (the first few)."""

    def __init__(self, message: str, matches: list[str]):
        super().__init__(message)
        self.matches = list(matches)

    def details(self) -> dict[str, Any]:
        return {"matches": self.matches}


class Conflict(PoiseError):
    """The action does not fit the current state of what it acts on (a job that is not waiting for approval, a
    finished job to cancel, a model without a previous champion to roll back to)."""


class NoChampion(Conflict):
    """A model with registered versions, none of them champion: there is no default version to serve. The message
    names the versions and the next steps; `versions` and `next_steps` carry them as data."""

    def __init__(self, message: str, versions: list[dict[str, Any]] | None = None,
                 next_steps: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.versions = versions or []
        self.next_steps = next_steps or []

    def details(self) -> dict[str, Any]:
        return {"versions": self.versions, "next_steps": self.next_steps}
