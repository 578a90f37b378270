"""Real servers on this machine: a fresh database per test, created cheaply and dropped afterwards.

PostgreSQL (127.0.0.1:5432, user postgres, trust) and MariaDB (127.0.0.1:3306, root, no password) must be
running: a test that needs one fails (never skips) with the command that starts it. PostgreSQL databases
are cloned from a template made once per session; MariaDB has no templates, so its are created empty.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError

POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MARIADB_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/"
POSTGRES_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
MARIADB_START = 'start-stop-daemon --start --oknodo --background --exec "$(command -v mariadbd)"'

_INTEGRATION_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration is an integration test (``-m 'not integration'`` skips it)."""
    for item in items:
        if _INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _admin_engine(url: str, server: str, start: str) -> Engine:
    engine = create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        engine.dispose()
        pytest.fail(f"{server} is not reachable ({type(exc).__name__}: {exc}); start it with:\n    {start}")
    return engine


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    engine = _admin_engine(POSTGRES_ADMIN, "PostgreSQL at 127.0.0.1:5432", POSTGRES_START)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def postgres_template(postgres_admin: Engine) -> Iterator[str]:
    """An empty database every test database is cloned from (add shared schema here, once)."""
    name = _unique("tc_template")
    with postgres_admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    yield name
    with postgres_admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def postgres_url(postgres_admin: Engine, postgres_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database of this test only."""
    name = _unique("tc_test")
    with postgres_admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name} TEMPLATE {postgres_template}"))
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with postgres_admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(scope="session")
def mariadb_admin() -> Iterator[Engine]:
    engine = _admin_engine(MARIADB_ADMIN, "MariaDB at 127.0.0.1:3306", MARIADB_START)
    yield engine
    engine.dispose()


@pytest.fixture
def mariadb_url(mariadb_admin: Engine) -> Iterator[str]:
    """A fresh MariaDB database of this test only."""
    name = _unique("tc_test")
    with mariadb_admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    yield f"mysql+pymysql://root@127.0.0.1:3306/{name}"
    with mariadb_admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def sql_url(request: pytest.FixtureRequest) -> str:
    """The URL of a fresh database on each SQL backend in turn."""
    fixture = {"sqlite": "sqlite_url", "postgresql": "postgres_url", "mariadb": "mariadb_url"}[request.param]
    url: str = request.getfixturevalue(fixture)
    return url
