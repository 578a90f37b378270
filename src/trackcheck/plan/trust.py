"""How far a plan is trusted, by where it came from.

Plans in the operator's ``--plans`` folder and the CLI's plan files are the operator's own: trusted, as
code is (``${ENV}`` expanded, sources defined inline, any file or host). Plans uploaded over the API or the
dashboard are data written by whoever holds a token: nothing in them is expanded, they read systems only
through the operator's connections, and what they may still define inline (when the operator allows it)
stays off loopback, link-local and private networks and away from the service's own state database.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Trust:
    """The rules a plan is loaded under. ``Trust()`` is a trusted plan; ``Trust.uploaded(...)`` one sent
    over the API."""

    uploaded: bool = False
    #: uploaded plans may define sources inline instead of naming a connection
    allow_inline_sources: bool = False
    #: inline sources and webhooks of uploaded plans may reach loopback, link-local and private hosts
    allow_private_networks: bool = False
    #: the folder an uploaded plan's schema files must be in (the service's plans folder); None: no files
    files_root: Path | None = None
    #: the service's state database, which no uploaded plan may read
    state_db: str | None = None

    @classmethod
    def for_uploads(
        cls,
        *,
        allow_inline_sources: bool = False,
        allow_private_networks: bool = False,
        files_root: Path | None = None,
        state_db: str | None = None,
    ) -> Trust:
        return cls(True, allow_inline_sources, allow_private_networks, files_root, state_db)


TRUSTED = Trust()
