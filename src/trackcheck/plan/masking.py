"""Plan text fit to show: URL passwords and the values of secret-looking keys masked, ``${ENV}`` kept."""

from __future__ import annotations

import re
from typing import Any

from trackcheck.errors import PlanError
from trackcheck.plan.safe_yaml import parse_yaml

#: what every secret is shown as: in plan text, source messages and connection options
MASK = "***"

#: keys whose values are credentials: authorization, password, token, secret, api keys (also x-api-key,
#: client_secret, access_token...); the plan's own ``key:`` is not one of them
_SECRET_NAME = r"(?:[\w.-]*[-_])?(?:authorization|password|passwd|secret|token|api[-_]?key)"  # noqa: S105 - a pattern, not a password
_SECRET_KEY_NAME = re.compile(rf"(?i){_SECRET_NAME}")
_SECRET_KEY = re.compile(
    rf"""(?ix)
    (?P<head>(?<![\w-])["']?{_SECRET_NAME}["']?[ \t]*:[ \t]*)
    (?P<value>"(?:[^"\\\n]|\\.)*"|'(?:[^'\n]|'')*'
        |(?:\$\{{[^}}\n]*\}}|[^\s,}}\]#|>])(?:\$\{{[^}}\n]*\}}|[^\s,}}\]]|[ \t]+(?=[^\s#,}}\]]))*)
    """
)
_ENV_REF = re.compile(r"\$\{[^}]*\}")
#: a URL's password, up to the *last* ``@`` of the authority: an unencoded ``@`` in a password must not leave
#: its tail visible
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)([^\s/]+)@")
#: request headers that never carry a credential; the value of any other header (``X-Custom-Auth``...) is
#: treated as one
PLAIN_HEADERS = frozenset(
    {
        "accept", "accept-encoding", "accept-language", "cache-control", "connection", "content-type",
        "user-agent", "x-requested-with", "pragma", "if-none-match", "if-modified-since", "x-api-version",
    }
)  # fmt: skip
#: the value of a credential-named query parameter in a URL: ``?api_key=...``, ``&access_token=...``
_QUERY_SECRET = re.compile(rf"(?i)[?&]{_SECRET_NAME}=([^&#\s\"']+)")
_AUTH_SCHEMES = re.compile(r"(?i)\b(?:bearer|basic|token)\b")
#: shorter secrets are masked where they stand (by the patterns), not replaced everywhere in the text
_MIN_REPLACED = 4


def mask_url_passwords(text: str) -> str:
    """Hide the password of every ``scheme://user:password@host`` in free text (error messages, logs)."""
    return _URL_PASSWORD.sub(rf"\1{MASK}@", text)


def _literal_secret(value: str) -> bool:
    """A value is a literal secret unless it only references environment variables (``Bearer ${TOKEN}``)."""
    rest = _AUTH_SCHEMES.sub("", _ENV_REF.sub("", value.strip().strip("\"'")))
    return bool(rest.strip())


def _yaml_secrets(node: Any, key: str | None = None) -> set[str]:
    """The literal secrets in parsed plan YAML: values of secret keys (and their last word: ``Bearer x``),
    every value of a ``headers`` mapping, URL passwords and credential-named query parameters anywhere."""
    if isinstance(node, dict) and key is not None and key.lower() == "headers":
        values = [
            str(v)
            for k, v in node.items()
            if isinstance(v, str | int | float) and not isinstance(v, bool) and str(k).lower() not in PLAIN_HEADERS
        ]
        return {w for v in values if _literal_secret(v) for w in (v, *v.split()[1:])}
    if isinstance(node, dict):
        return set().union(*(_yaml_secrets(v, str(k)) for k, v in node.items()))
    if isinstance(node, list):
        return set().union(*(_yaml_secrets(v) for v in node))
    if isinstance(node, bool) or not isinstance(node, str | int | float):
        return set()
    value = str(node)
    found = {m.group(2) for m in _URL_PASSWORD.finditer(value) if _literal_secret(m.group(2))}
    found |= {m.group(1) for m in _QUERY_SECRET.finditer(value) if _literal_secret(m.group(1))}
    if key is not None and _SECRET_KEY_NAME.fullmatch(key) and _literal_secret(value):
        found |= {value, *value.split()[1:]}
    return found


def secret_name(key: str) -> bool:
    """Whether a key names a credential (``password``, ``sasl_password``, ``api_key``, ``x-auth-token``...)."""
    return _SECRET_KEY_NAME.fullmatch(key) is not None


def mask_plan_text(text: str) -> str:
    """Plan YAML safe to show: URL passwords (as ``mask_url_passwords`` does) and the values of secret keys
    (Authorization, password, secret, token, api keys) become ``***``. ``${ENV}`` references are kept: they
    are no secret, and a client that saves the text back must not lose them.

    Secrets are found by parsing the YAML (exact, whatever the quoting or layout) and replaced wherever
    they occur; the patterns then catch what parsing cannot see (text that is not valid YAML)."""
    try:
        secrets = _yaml_secrets(parse_yaml(text))
    except PlanError:  # not YAML, or beyond the plan limits: the patterns below still apply
        secrets = set()
    for secret in sorted((s for s in secrets if len(s) >= _MIN_REPLACED), key=len, reverse=True):
        text = text.replace(secret, MASK)

    def url(match: re.Match[str]) -> str:
        keep = not _literal_secret(match.group(2))
        return match.group(0) if keep else f"{match.group(1)}{MASK}@"

    def key(match: re.Match[str]) -> str:
        return match.group(0) if not _literal_secret(match.group("value")) else f"{match.group('head')}{MASK}"

    def query(match: re.Match[str]) -> str:
        keep = not _literal_secret(match.group(1))
        return match.group(0) if keep else match.group(0)[: match.start(1) - match.start(0)] + MASK

    return _QUERY_SECRET.sub(query, _SECRET_KEY.sub(key, _URL_PASSWORD.sub(url, text)))
