"""``trackcheck diff`` as a user runs it: a subprocess, its exit code, its JSON or its listing (issue 13)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.integration


def _trackcheck(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trackcheck", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def _table(path: Path, rows: list[tuple[int, str, float]]) -> str:
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE events (id integer PRIMARY KEY, event text, amount decimal(10,2))")
        c.executemany("INSERT INTO events VALUES (?, ?, ?)", rows)
    return f"sqlite:///{path}"


ROWS = [(1, "view", 1.5), (2, "click", 2.0), (3, "购买", 99.99)]


def test_equal_tables_exit_0_and_differences_exit_1_listed_with_both_values(tmp_path: Path) -> None:
    left = _table(tmp_path / "left.db", ROWS)
    same = _table(tmp_path / "same.db", ROWS)
    other = _table(tmp_path / "other.db", [(1, "view", 1.5), (3, "购买", 89.99), (4, "view", 0.0)])

    equal = _trackcheck("diff", left, "events", same, "events", "-k", "id", cwd=tmp_path)
    differ = _trackcheck("diff", left, "events", other, "events", "-k", "id", cwd=tmp_path)
    document = _trackcheck("diff", left, "events", other, "events", "-k", "id", "-c", "amount", "--json", cwd=tmp_path)

    assert equal.returncode == 0, equal.stderr
    assert "passed: the tables match: 3 rows, 2 fields compared" in equal.stderr
    assert differ.returncode == 1, differ.stderr
    assert "missing (1): 2" in differ.stdout and "unexpected (1): 4" in differ.stdout
    assert "│ 3   │ amount │ 99.99 │ 89.99 │" in differ.stdout
    assert "failed: the tables differ: 1 missing, 1 unexpected, 1 changed" in differ.stderr
    result = json.loads(document.stdout)
    assert document.returncode == 1
    assert (result["verdict"], result["missing"], result["unexpected"]) == ("failed", [2], [4])
    assert result["mismatches"] == [{"key": 3, "field": "amount", "expected": 99.99, "actual": 89.99}]
    assert result["differences"] == {"missing": 1, "unexpected": 1, "changed": 1, "duplicates": 0}
    assert result["fields"] == [{"name": "amount", "form": "fixed", "digits": 2}]


def test_a_password_on_the_command_line_is_refused_and_never_printed(tmp_path: Path) -> None:
    left = _table(tmp_path / "left.db", ROWS)

    given = _trackcheck(
        "diff", "mysql://root:hunter2@127.0.0.1/test", "events", left, "events", "-k", "id", cwd=tmp_path
    )

    assert given.returncode == 2
    assert "a password on the command line is visible in ps" in given.stderr
    assert "hunter2" not in given.stderr + given.stdout


def test_a_connection_of_trackcheck_toml_takes_its_password_from_the_environment(
    tmp_path: Path, mariadb_url: str
) -> None:
    database = mariadb_url.rsplit("/", 1)[1]
    engine = create_engine(mariadb_url)
    with engine.begin() as c:
        c.execute(text("CREATE TABLE events (id int PRIMARY KEY, event varchar(10), amount decimal(10,2))"))
        c.execute(text("INSERT INTO events VALUES (1, 'view', 1.5), (2, 'click', 2.0), (3, '购买', 99.99)"))
        c.execute(text("CREATE USER IF NOT EXISTS tc_diff_reader@'127.0.0.1' IDENTIFIED BY 's3cret-pw'"))
        c.execute(text(f"GRANT SELECT ON {database}.* TO tc_diff_reader@'127.0.0.1'"))
    engine.dispose()
    (tmp_path / "trackcheck.toml").write_text(
        f'[connections.warehouse]\ntype = "sql"\nurl = "mysql://tc_diff_reader:${{TC_DIFF_PW}}@127.0.0.1/{database}"\n'
    )
    left = _table(tmp_path / "left.db", ROWS)
    try:
        right = _trackcheck("diff", left, "events", "warehouse", "events", "-k", "id", cwd=tmp_path,
                            env={"TC_DIFF_PW": "s3cret-pw"})  # fmt: skip
        wrong = _trackcheck("diff", left, "events", "warehouse", "events", "-k", "id", cwd=tmp_path,
                            env={"TC_DIFF_PW": "not-the-pw"})  # fmt: skip
        unknown = _trackcheck("diff", left, "events", "lake", "events", "-k", "id", cwd=tmp_path,
                              env={"TC_DIFF_PW": "s3cret-pw"})  # fmt: skip
    finally:
        engine = create_engine(mariadb_url)
        with engine.begin() as c:
            c.execute(text("DROP USER IF EXISTS tc_diff_reader@'127.0.0.1'"))
        engine.dispose()

    assert right.returncode == 0, right.stderr
    assert wrong.returncode == 3
    assert "source 'right': cannot connect to mysql+pymysql://tc_diff_reader:***@127.0.0.1" in wrong.stderr
    assert "not-the-pw" not in wrong.stderr + wrong.stdout
    assert unknown.returncode == 2 and "no connection 'lake' in trackcheck.toml's [connections]" in unknown.stderr


@pytest.mark.parametrize(
    ("option", "said"),
    [
        (["--digits", "amount"], "field '--digits': write FIELD=VALUE, not 'amount'"),
        (["--digits", "amount=x"], "field '--digits': amount=x: write a number of digits from 0 to 30"),
        (["--tolerance", "amount=soon"], "amount=soon: write a number (0.01) or a duration (2s)"),
        (["-c", "amont"], "field 'amont': the left table has no column 'amont' (it has id, event, amount)"),
        (["--where", "id > 0; DROP TABLE events"], "a second statement after ';'"),
        (["--bucket", "amount=soon"], "amount=soon: write FIELD=SIZE with a size of whole seconds"),
        (["--bucket", "amount=1h"], "field 'amount': bucket.by: the left table holds decimal: name a timestamp"),
    ],
)
def test_bad_options_exit_2_naming_what_is_wrong(tmp_path: Path, option: list[str], said: str) -> None:
    left = _table(tmp_path / "left.db", ROWS)

    given = _trackcheck("diff", left, "events", left, "events", "-k", "id", *option, cwd=tmp_path)

    assert given.returncode == 2, given.stderr
    assert said in given.stderr
    assert sqlite3.connect(tmp_path / "left.db").execute("SELECT COUNT(*) FROM events").fetchone() == (3,)


def test_without_a_terminal_it_says_how_far_it_got(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from trackcheck import cli

    monkeypatch.setattr(cli, "DIFF_HEARTBEAT", 0.0)  # a line at every step instead of every 10 s
    left = _table(tmp_path / "left.db", ROWS)
    right = _table(tmp_path / "right.db", ROWS[:2])

    given = CliRunner().invoke(cli.main, ["diff", left, "events", right, "events", "-k", "id"])

    assert given.exit_code == 1, given.output
    assert "level 1: checksums: 3 of 3 rows (100%)" in given.stderr
    assert "missing (1): 3" in given.stdout
