"""The attacks of docs/security.md, each performed against real parts: a real service (Flask app or
``trackcheck serve``), the real PostgreSQL and MariaDB of this machine, real files and HTTP servers.

Every test here asserts that an attack is refused with a clear 4xx (or a PlanError naming the key), that
nothing was created or read, and that no canary secret appears in any answer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import (  # noqa: F401 - fixtures shared with the integration tests
    mariadb_admin,
    mariadb_url,
    postgres_admin,
    postgres_template,
    postgres_url,
    sqlite_url,
)

_SECURITY_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _SECURITY_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)
