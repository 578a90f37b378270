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
    ├── StoreError              the state database could not be read or written    (exit 3)
    ├── RunNotFound             no run with that id                               (exit 2)
    └── ConfigError             the service configuration is invalid or unsafe     (exit 2)

Every error carries the context a user needs to act (plan, stage, source, field) and never a credential:
driver errors are translated at the boundary with ``raise ... from exc`` after their text was masked.
"""

from __future__ import annotations


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
    """A source could not be read; the stage is retried with back-off until it times out."""

    exit_code = 3


class SourceConnectError(SourceError):
    """The source could not be reached, or its driver is not installed."""


class SourceQueryError(SourceError):
    """The source answered, but the query or request failed."""


class SourceTimeoutError(SourceError):
    """The source did not answer within its timeout."""


class StoreError(TrackcheckError):
    """The state database could not be read or written."""

    exit_code = 3


class RunNotFound(TrackcheckError):
    """No run with that id exists in the state database."""

    exit_code = 2


class ConfigError(TrackcheckError):
    """The service configuration (trackcheck.toml, TRACKCHECK_* variables, flags) is invalid or unsafe."""

    exit_code = 2
