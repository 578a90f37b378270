"""Which parts of a source's options are secret, and the same options with those parts masked.

A connection's secrets are write-only: an API answer or a page shows ``***`` where they are, and a client
that sends a masked document back (``PUT`` after ``GET``) keeps the stored secrets (``unmask``). Secrets
are: the password of a URL, the value of a query parameter named like a credential (``?api_key=``), every
header value, and the value of any key named like a credential (``password``, ``token``, ``secret``...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from trackcheck.plan.masking import MASK

SECRET_NAME = re.compile(
    r"token|secret|passw|pwd|auth|credential|signature|session|cookie|api[-_]?key|private[-_]?key|(^|[-_])key$",
    re.I,
)


def mask_options(value: Any, key: str | None = None, *, in_headers: bool = False) -> Any:
    """``value`` (a source's options, or any part of them) with every secret part replaced by ``***``."""
    if isinstance(value, Mapping):
        return {
            k: mask_options(v, str(k), in_headers=in_headers or str(k).lower() == "headers") for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_options(v, key) for v in value]
    if isinstance(value, str):
        if value and (in_headers or (key is not None and SECRET_NAME.search(key))):
            return MASK
        return mask_url(value)
    return value


def has_secrets(options: Mapping[str, Any]) -> bool:
    return mask_options(options) != dict(options)


def mask_url(text: str) -> str:
    """A URL without its password and the values of credential-named query parameters; other text as is."""
    if "://" not in text:
        return text
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        return text
    netloc = parts.netloc
    if password:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(SECRET_NAME.search(name) for name, _ in pairs):
            query = urlencode([(n, MASK if SECRET_NAME.search(n) else v) for n, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return text
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def unmask(new: Any, old: Any) -> Any:
    """``new`` with every ``***`` a client sent back replaced by the secret stored at the same place in ``old``."""
    if isinstance(new, Mapping):
        previous = old if isinstance(old, Mapping) else {}
        return {k: unmask(v, previous.get(k)) for k, v in new.items()}
    if isinstance(new, list):
        previous_items = old if isinstance(old, list) else []
        return [unmask(v, previous_items[i] if i < len(previous_items) else None) for i, v in enumerate(new)]
    if new == MASK and isinstance(old, str):
        return old
    if isinstance(new, str) and MASK in new and isinstance(old, str) and "://" in new:
        return _unmask_url(new, old)
    return new


def _unmask_url(new: str, old: str) -> str:
    try:
        fresh, stored = urlsplit(new), urlsplit(old)
        password = stored.password
    except ValueError:
        return new
    netloc = fresh.netloc
    if fresh.password == MASK and password is not None:
        user, _, host = netloc.rpartition("@")
        old_user = stored.netloc.rpartition("@")[0]
        netloc = f"{old_user}@{host}" if user.partition(":")[0] == old_user.partition(":")[0] else netloc
    query = fresh.query
    if query:
        kept = dict(parse_qsl(stored.query, keep_blank_values=True))
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(n, kept.get(n, v) if v == MASK else v) for n, v in pairs])
    return urlunsplit((fresh.scheme, netloc, fresh.path, query, fresh.fragment))
