"""Checking that a sql stage's ``query`` is exactly one read-only query, before a plan is stored.

trackcheck runs a stage's query as ``SELECT * FROM (<query>) AS tc_q WHERE ...``. A query that closes the
parenthesis, adds ``;`` and a second statement, writes through a data-modifying ``WITH``, or calls a
function that reads the server's files (``pg_read_file``) turns a read into something else. So the query
is parsed with sqlglot in the dialect of the source's database and accepted only if it is one SELECT (with
CTEs, set operations, VALUES and subqueries) that calls none of the functions denied below. A refusal says
why and where (line and column of the offending token).

Why a denylist and not an allowlist of functions: a query may call any of the hundreds of functions a
database has, plus the user's own; an allowlist would refuse ordinary queries and need updating for every
server version. The functions that reach outside the query (files, network, processes, locks, sequences,
session settings) are few and well known, so they are listed here, per dialect family. The list is one
layer of two: every session is also read-only on the server (``SqlSource._session_setup``), and on
PostgreSQL every statement goes through the extended protocol, which refuses a second statement. The
guard stops what a read-only session does not (reading files, sleeping, taking locks) and says so when
the plan loads instead of when a run fails; the session stops writes the guard might not know about.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, SqlglotError, TokenError
from sqlglot.tokens import Token, TokenType

#: SQLAlchemy backend name -> sqlglot dialect; any other backend is read with sqlglot's generic dialect.
#: SQL Server and Oracle are parsed in their own syntax but refused what any family below refuses.
DIALECTS = {
    "postgresql": "postgres",
    "postgres": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
    "sqlite": "sqlite",
    "duckdb": "duckdb",
    "clickhouse": "clickhouse",
    "mssql": "tsql",
    "oracle": "oracle",
}


@dataclass(frozen=True)
class DenyList:
    """Functions of one dialect family that reach outside the query; names compared in lower case."""

    names: frozenset[str]
    prefixes: tuple[str, ...] = ()

    def denies(self, name: str) -> bool:
        return name in self.names or name.startswith(self.prefixes)


def _names(*groups: str) -> frozenset[str]:
    return frozenset(" ".join(groups).split())


POSTGRES = DenyList(
    names=_names(
        "set_config",  # session settings, e.g. default_transaction_read_only
        "pg_stat_file pg_terminate_backend pg_cancel_backend pg_reload_conf pg_rotate_logfile pg_promote",
        "pg_switch_wal pg_notify pg_log_backend_memory_contexts pg_import_system_collations pg_backup_start",
        "pg_backup_stop pg_start_backup pg_stop_backup pg_log_standby_snapshot pg_sync_replication_slots",
        "pg_stat_statements_reset",
        "nextval setval",  # sequences are written even in a read-only transaction
    ),
    prefixes=(
        "pg_read_",  # pg_read_file, pg_read_binary_file: server files
        "pg_ls_",  # directory listings
        "pg_file_",  # adminpack: write, rename, unlink
        "lo_",  # large objects: lo_import/lo_export read and write server files
        "dblink",  # connections to other servers
        "query_to_xml",  # these four run SQL given as text
        "cursor_to_xml",
        "database_to_xml",
        "schema_to_xml",
        "pg_sleep",
        "pg_advisory",
        "pg_try_advisory",
        "pg_logical_",
        "pg_replication_",
        "pg_create_",
        "pg_drop_",
        "pg_copy_",
        "pg_stat_reset",
        "pg_set_",
        "pg_clear_",
        "pg_restore_",
        "pg_wal_replay_",
    ),
)
MYSQL = DenyList(
    names=_names(
        "load_file sleep benchmark",
        "get_lock release_lock release_all_locks",
        "master_pos_wait source_pos_wait master_gtid_wait wait_for_executed_gtid_set wait_until_sql_thread_after_gtids",
        "sys_exec sys_eval sys_get sys_set",  # lib_mysqludf_sys: run programs, environment variables
        "nextval setval",  # MariaDB sequences
    ),
)
SQLITE = DenyList(names=_names("load_extension readfile writefile edit fts3_tokenizer fsdir zipfile"))
DUCKDB = DenyList(
    names=_names("glob sniff_csv getenv query query_table st_read st_read_meta"),
    prefixes=(
        "read_",  # read_csv*, read_json*, read_ndjson*, read_parquet, read_text, read_blob, read_xlsx
        "parquet_",
        "sqlite_",
        "postgres_",
        "mysql_",
        "iceberg_",
        "delta_",
    ),
)
CLICKHOUSE = DenyList(
    names=_names(
        "file filecluster url urlcluster s3 s3cluster gcs hdfs hdfscluster azureblobstorage azureblobstoragecluster",
        "remote remotesecure cluster clusterallreplicas mysql postgresql sqlite mongodb redis jdbc odbc",
        "executable input iceberg deltalake hudi sleep sleepeachrow",
    ),
)


@dataclass(frozen=True)
class _Rules:
    """What is refused in one sqlglot dialect besides statements that are not queries."""

    deny: tuple[DenyList, ...]
    #: a function used as a table (``FROM read_csv(...)``) unless it only generates rows
    table_functions: bool = False
    #: a quoted table name that looks like a path or URL (DuckDB reads ``FROM "x.csv"`` as a file)
    path_tables: bool = False
    #: ``@var := value`` (MySQL session variables)
    variable_assignment: bool = False


_RULES = {
    "postgres": _Rules((POSTGRES,)),
    "mysql": _Rules((MYSQL,), variable_assignment=True),
    "sqlite": _Rules((SQLITE,)),
    # DuckDB copies many PostgreSQL functions; its table functions read files and other databases
    "duckdb": _Rules((DUCKDB, POSTGRES), table_functions=True, path_tables=True),
    "clickhouse": _Rules((CLICKHOUSE,), table_functions=True),
}
#: any other server: everything any family denies
_GENERIC = _Rules(
    (POSTGRES, MYSQL, SQLITE, DUCKDB, CLICKHOUSE), table_functions=True, path_tables=True, variable_assignment=True
)
#: table functions that only generate rows, allowed where other table functions are not
_ROW_GENERATORS = frozenset(
    {"range", "generate_series", "unnest", "json_each", "json_tree", "numbers", "numbers_mt", "zeros", "zeros_mt"}
)

#: statements that are not a query, wherever they appear (top level or inside WITH)
_NOT_QUERIES: tuple[type[exp.Expr], ...] = (
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Copy,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.TruncateTable,
    exp.Set,
    exp.Grant,
    exp.Revoke,
    exp.Command,  # what sqlglot falls back to for statements it does not model (DO, CALL, EXPLAIN...)
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.Pragma,
    exp.Use,
    exp.Describe,
    exp.Show,
    exp.LoadData,
    exp.Kill,
    exp.Analyze,
    exp.Attach,
    exp.Detach,
    exp.Install,
    exp.Cache,
    exp.Uncache,
    exp.Refresh,
    exp.Export,
    exp.Declare,
    exp.Execute,
    exp.Comment,
    exp.Summarize,
)
_KEYWORDS: dict[type[exp.Expr], str] = {exp.TruncateTable: "TRUNCATE", exp.LoadData: "LOAD DATA"}
_STRINGS = frozenset(
    {
        TokenType.STRING,
        TokenType.NATIONAL_STRING,
        TokenType.BYTE_STRING,
        TokenType.BIT_STRING,
        TokenType.HEX_STRING,
        TokenType.UNICODE_STRING,
        TokenType.RAW_STRING,
        TokenType.NATIONAL_RAW_STRING,
        TokenType.HEREDOC_STRING,
    }
)
_QUOTED = _STRINGS | {TokenType.IDENTIFIER}
#: literals in which a backslash may escape the quote (not $$...$$ or raw strings)
_ESCAPABLE = _STRINGS - {TokenType.HEREDOC_STRING, TokenType.RAW_STRING, TokenType.NATIONAL_RAW_STRING}
#: the first two words of FOR UPDATE, FOR NO KEY UPDATE, FOR SHARE, FOR KEY SHARE, LOCK IN SHARE MODE
_LOCK_STARTS = frozenset({("FOR", "UPDATE"), ("FOR", "NO"), ("FOR", "SHARE"), ("FOR", "KEY"), ("LOCK", "IN")})
#: MySQL and MariaDB run the text of /*! ... */ and /*M! ... */; sqlglot reads them as comments
_EXECUTABLE_COMMENT = re.compile(r"/\*[Mm]?!")
_PATH_LIKE = re.compile(r"[./\\:]")


@dataclass(frozen=True)
class Refusal:
    """Why a query was refused, and where (1-based line and column of the offending token, if known)."""

    reason: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.line is None or self.column is None:
            return self.reason
        return f"{self.reason} at line {self.line}, column {self.column}"


def query_body(sql: str) -> str:
    """The part of ``sql`` trackcheck wraps in its subquery: without trailing ``;`` and whitespace.

    Leading whitespace is kept so offsets into it are offsets into ``sql``; ``build_statement`` strips it.
    """
    return sql[: len(sql.rstrip().rstrip(";").rstrip())]


def check_query(sql: str, dialect: str) -> Refusal | None:
    """Why ``sql`` is not exactly one read-only query, or None if it is.

    ``dialect`` is the SQLAlchemy backend name of the source (``postgresql``, ``mysql``, ``mariadb``,
    ``sqlite``, ``duckdb``, ``clickhouse``); another name reads the query with sqlglot's generic dialect and
    refuses what any known dialect refuses. No I/O: this runs when a plan loads.
    """
    name = DIALECTS.get(dialect.lower())
    return _Guard(sql, name).check()


class _Guard:
    """One check of one query; holds the tokens so a refused node can be placed in the text."""

    def __init__(self, sql: str, dialect: str | None) -> None:
        self.sql = sql
        self.body = query_body(sql)
        self.dialect = Dialect.get_or_raise(dialect)
        self.dialect_label = dialect or "generic"
        self.rules = _RULES.get(dialect or "", _GENERIC)
        self.tokens: list[Token] = []
        self.starts: list[int] = []
        self.string_starts: set[int] = set()

    def check(self) -> Refusal | None:
        tokenizer = self.dialect.tokenizer()
        try:
            self.tokens = tokenizer.tokenize(self.body)
        except TokenError:
            done = tokenizer.tokens
            after = done[-1].end + 1 if done else 0
            at = len(self.body) - len(self.body[after:].lstrip())
            return self.refuse("cannot read the SQL (an unterminated string, quoted name or comment?)", at)
        self.starts = [token.start for token in self.tokens]
        self.string_starts = {t.start for t in self.tokens if t.token_type in _STRINGS}
        problem = self._check_tokens()
        if problem is not None:
            return problem
        try:
            statements = self.dialect.parser().parse(self.tokens, self.body)
        except ParseError as exc:
            return self._parse_error(exc)
        except SqlglotError as exc:
            return Refusal(f"cannot parse the query as {self.dialect_label} SQL: {str(exc).splitlines()[0]}")
        except RecursionError:
            return Refusal("the query is nested too deeply to be checked")
        statement = statements[0] if len(statements) == 1 else None
        if statement is None:
            return Refusal("the query is empty: write one SELECT")
        return self._check_statement(statement)

    # -- text --------------------------------------------------------------------------------------------
    def _check_tokens(self) -> Refusal | None:
        for match in _EXECUTABLE_COMMENT.finditer(self.body):
            if not self._inside_token(match.start()):
                return self.refuse(
                    f"{match.group()} ... */ is an executable comment: MySQL and MariaDB run its text", match.start()
                )
        for token in self.tokens:
            if token.token_type in _ESCAPABLE and not _same_end_with_and_without_escapes(self._text(token)):
                return self.refuse(
                    "a backslash before a quote makes where this string ends depend on server settings "
                    "(NO_BACKSLASH_ESCAPES, standard_conforming_strings): double the quote instead ('')",
                    token.start,
                )
        depth = 0
        for index, token in enumerate(self.tokens):
            if token.token_type == TokenType.SEMICOLON:
                rest = self.tokens[index + 1 :]
                if rest:
                    return self.refuse("a second statement after ';': write exactly one SELECT", rest[0].start)
                return self.refuse("';' may only be the last character of the query (drop it)", token.start)
            if token.token_type == TokenType.L_PAREN:
                depth += 1
            elif token.token_type == TokenType.R_PAREN:
                depth -= 1
                if depth < 0:
                    return self.refuse(
                        "')' has no matching '(': it would close trackcheck's SELECT * FROM (<query>)", token.start
                    )
        if depth > 0:
            opened = [t for t in self.tokens if t.token_type == TokenType.L_PAREN]
            return self.refuse("'(' is never closed", opened[-depth].start)
        return None

    def _parse_error(self, exc: ParseError) -> Refusal:
        first = exc.errors[0] if exc.errors else {}
        description = first.get("description") or str(exc).splitlines()[0]
        highlight = first.get("highlight") or ""
        near = f" near {highlight!r}" if highlight else ""
        reason = f"cannot parse the query as {self.dialect_label} SQL: {description}{near}"
        line, col = first.get("line"), first.get("col")
        if not isinstance(line, int) or not isinstance(col, int):
            return Refusal(reason)
        # sqlglot reports the column of the token's last character; point at its first one instead
        end = _offset(self.body, line, col)
        return self.refuse(reason, max(end - len(highlight) + 1, 0) if highlight else end)

    # -- tree --------------------------------------------------------------------------------------------
    def _check_statement(self, statement: exp.Expr) -> Refusal | None:
        if not isinstance(statement, exp.Query | exp.Values):
            first = self.tokens[0].text.upper()
            keyword = _keyword(statement) if first == "WITH" else first
            at = self._keyword_offset(keyword, None)
            return self.refuse(f"{keyword} is not a read-only query: write one SELECT", at)
        for node in statement.walk():
            problem = self._check_node(node)
            if problem is not None:
                return problem
        return None

    def _check_node(self, node: exp.Expr) -> Refusal | None:
        if isinstance(node, _NOT_QUERIES):
            keyword = _keyword(node)
            at = self._keyword_offset(keyword, _first_offset(node))
            return self.refuse(f"{keyword} inside the query: only reading is allowed", at)
        if isinstance(node, exp.Into):
            at = self._keyword_offset("INTO", _first_offset(node))
            return self.refuse("SELECT ... INTO writes the result to a table, variable or file", at)
        if isinstance(node, exp.Lock):
            at = self._lock_offset()
            return self.refuse("FOR UPDATE/SHARE locks rows: only reading is allowed", at)
        if isinstance(node, exp.Func):
            return self._check_function(node)
        if isinstance(node, exp.Table):
            return self._check_table(node)
        if self.rules.variable_assignment and isinstance(node, exp.PropertyEQ) and isinstance(node.this, exp.Parameter):
            return self.refuse("':=' assigns a session variable", self._keyword_offset(":=", _first_offset(node)))
        return None

    def _check_function(self, node: exp.Func) -> Refusal | None:
        names = self._function_names(node)
        for name in sorted(names):
            if any(deny.denies(name) for deny in self.rules.deny):
                return self.refuse(
                    f"function {name}() is not allowed: it reaches the server's files, network, processes, "
                    "locks, sequences or settings",
                    _first_offset(node),
                )
        return None

    def _check_table(self, node: exp.Table) -> Refusal | None:
        target = node.this
        start = target.meta.get("start") if isinstance(target, exp.Expr) else None
        literal = isinstance(target, exp.Literal) and target.is_string
        if literal or start in self.string_starts:
            return self.refuse(f"a string used as a table ({target.name!r}) reads a file or URL", _first_offset(node))
        if self.rules.table_functions and isinstance(target, exp.Func):
            names = self._function_names(target)
            if not names & _ROW_GENERATORS:
                written = self._written_name(target) or sorted(names)[0]
                return self.refuse(
                    f"table function {written}() in FROM can read files or other databases", _first_offset(node)
                )
        if self.rules.path_tables:
            for part in node.parts:
                if isinstance(part, exp.Identifier) and part.quoted and _PATH_LIKE.search(part.name):
                    return self.refuse(
                        f"a table named like a path or URL ({part.name!r}) reads a file", part.meta.get("start")
                    )
        return None

    def _function_names(self, node: exp.Func) -> set[str]:
        """Every name ``node`` may have been called by: as written, and sqlglot's names for its type."""
        names = {name.lower() for name in type(node).sql_names()}
        if isinstance(node, exp.Anonymous | exp.AnonymousAggFunc):
            names = {node.name.lower()}
        written = self._written_name(node)
        if written:
            names.add(written.lower())
        return names

    def _written_name(self, node: exp.Expr) -> str | None:
        start, end = node.meta.get("start"), node.meta.get("end")
        if not isinstance(start, int) or not isinstance(end, int):
            return None
        return self.body[start : end + 1].strip('"`[]') or None

    # -- positions ---------------------------------------------------------------------------------------
    def refuse(self, reason: str, offset: int | None) -> Refusal:
        if offset is None:
            return Refusal(reason)
        line = self.sql.count("\n", 0, offset) + 1
        column = offset - (self.sql.rfind("\n", 0, offset) + 1) + 1
        return Refusal(reason, line, column)

    def _text(self, token: Token) -> str:
        return self.body[token.start : token.end + 1]

    def _inside_token(self, offset: int) -> bool:
        index = bisect.bisect_right(self.starts, offset) - 1
        return index >= 0 and self.tokens[index].end >= offset

    def _keyword_offset(self, keyword: str, before: int | None) -> int | None:
        """Where ``keyword`` (its first word) is written: the last time before ``before``, else the first."""
        word = keyword.split()[0]
        found = [t.start for t in self.tokens if t.token_type not in _QUOTED and t.text.upper() == word]
        if not found:
            return before
        if before is not None:
            earlier = [start for start in found if start <= before]
            if earlier:
                return earlier[-1]
        return found[0]

    def _lock_offset(self) -> int | None:
        for token, following in zip(self.tokens, self.tokens[1:], strict=False):
            pair = (token.text.upper(), following.text.upper())
            if pair in _LOCK_STARTS:
                return token.start
        return None


def _keyword(node: exp.Expr) -> str:
    if isinstance(node, exp.Command):
        return str(node.this).upper()
    return _KEYWORDS.get(type(node), node.key.upper())


def _first_offset(node: exp.Expr) -> int | None:
    """The smallest text offset sqlglot recorded for ``node`` or anything under it."""
    starts = [n.meta["start"] for n in node.walk() if isinstance(n.meta.get("start"), int)]
    return min(starts) if starts else None


def _offset(text: str, line: int, column: int) -> int:
    """The offset of 1-based ``line`` and ``column`` in ``text``."""
    start = 0
    for _ in range(line - 1):
        start = text.index("\n", start) + 1
    return start + column - 1


def _same_end_with_and_without_escapes(literal: str) -> bool:
    """Whether a quoted literal ends at the same place whether or not a backslash escapes the next character.

    MySQL reads ``'it\\'s'`` as one string unless NO_BACKSLASH_ESCAPES is set, PostgreSQL only when
    standard_conforming_strings is off; sqlglot reads it one way. Where the readings differ, the text after
    the string would be SQL for the server and string for the guard.
    """
    if "\\" not in literal:
        return True
    opening = min((i for i in (literal.find("'"), literal.find('"')) if i >= 0), default=-1)
    if opening < 0:
        return True
    quote = literal[opening]
    return _closing(literal, opening, quote, escapes=True) == _closing(literal, opening, quote, escapes=False)


def _closing(literal: str, opening: int, quote: str, *, escapes: bool) -> int:
    index = opening + 1
    while index < len(literal):
        char = literal[index]
        escaped = escapes and char == "\\"
        if escaped or (char == quote and literal[index + 1 : index + 2] == quote):
            index += 2
        elif char == quote:
            return index
        else:
            index += 1
    return len(literal)
