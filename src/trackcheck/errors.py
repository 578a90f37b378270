"""The one exception tree of trackcheck.

Exceptions mean "could not evaluate": a plan that cannot be used, a source that cannot be read, a state
database that cannot be written. "The data is wrong" is never an exception: it is a failed stage outcome.

    TrackcheckError
    ├── PlanError               the plan file or a run's input is invalid          (exit 2)
    │   └── ParamError          a run parameter is missing or has the wrong type   (exit 2)
    ├── SourceError             a source could not be read                         (exit 3)
    │   ├── SourceConnectError  could not connect / missing driver
    │   ├── SourceQueryError    connected, but the query or request failed
    │   └── SourceTimeoutError  the source did not answer in time
    │       (each is ``permanent`` or ``transient``: see ErrorKind)
    ├── StoreError              the state database could not be read or written    (exit 3)
    ├── RunNotFound             no run with that id                               (exit 2)
    └── ConfigError             the service configuration is invalid or unsafe     (exit 2)

Every error carries the context a user needs to act (plan, stage, source, field) and never a credential:
driver errors are translated at the boundary with ``raise ... from exc`` after their text was masked.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """Whether a source error can fix itself. Decided once, where the driver's error is translated.

    ``permanent``: the same read will fail the same way every time (an unknown table or column, SQL that
    does not parse, 401/403 from an API, a missing root folder, a missing driver): the stage ends as
    ``error`` at once (or after the plan's ``retries``). ``transient``: the system may answer later (a
    refused connection, a timeout, a 503): retried with back-off until the stage times out.
    """

    PERMANENT = "permanent"
    TRANSIENT = "transient"


class TrackcheckError(Exception):
    """Base of every error trackcheck raises on purpose."""

    exit_code = 3

    def __init__(self, message: str, **context: str | None) -> None:
        self.message = message
        self.context = {k: v for k, v in context.items() if v is not None}
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ", ".join(f"{k} {v!r}" for k, v in self.context.items())
        return f"{where}: {self.message}" if where else self.message


class PlanError(TrackcheckError):
    """The plan (or a run's input against it) is invalid: nothing was run."""

    exit_code = 2


class ParamError(PlanError):
    """A run parameter is missing, unknown or of the wrong type."""


class SourceError(TrackcheckError):
    """A source could not be read: retried with back-off until the stage times out when ``transient``,
    the stage ends at once when ``permanent``."""

    exit_code = 3

    def __init__(self, message: str, *, kind: ErrorKind = ErrorKind.TRANSIENT, **context: str | None) -> None:
        self.kind = kind
        super().__init__(message, **context)


class SourceConnectError(SourceError):
    """The source could not be reached, or its driver is not installed."""


class SourceQueryError(SourceError):
    """The source answered, but the query or request failed."""


class SourceTimeoutError(SourceError):
    """The source did not answer within its timeout."""


class NotColumnar(SourceQueryError):
    """The rows cannot be read in columns (a column Arrow has no type for): read them as records instead."""


class StoreError(TrackcheckError):
    """The state database could not be read or written. ``data_error``: it refused a value it was given
    (the write is at fault, not the database's availability)."""

    exit_code = 3

    def __init__(self, message: str, *, data_error: bool = False, **context: str | None) -> None:
        self.data_error = data_error
        super().__init__(message, **context)


class Superseded(StoreError):
    """A poll's claim on its group's tick is no longer the newest (``store.ticks.Claim``): another leader
    took the lease, or a newer tick of the group was claimed. Its writes are refused and it stops; the
    group is polled by whoever holds the newer claim."""


class RunNotFound(TrackcheckError):
    """No run with that id exists in the state database."""

    exit_code = 2


class ConfigError(TrackcheckError):
    """The service configuration (trackcheck.toml, TRACKCHECK_* variables, flags) is invalid or unsafe."""

    exit_code = 2
