"""SSN masking (profiles/exchange/identifiers.json, `masked` systems): stored whole, shown
whole only to `system/` scopes.

- `view` is the identity workflow's read-time view (access/views.py): every admitted
  resource of the table's types leaves with each masked identifier cut to its last digits,
  on every path the post-check covers (read, vread, search and includes, history,
  `$everything`, `$export`, `$match`) and on write answers.
- `refuse_masked_search`: a search naming a masked system (`identifier=<ssn>|<value>`, in a
  chain, `_has` or a conditional header alike) needs a `system/` scope; anyone else is
  refused (403) before the database is asked, so the answer never tells whether an SSN
  belongs to someone; so is an identifier or word search whose value has an SSN's shape
  (a bare `identifier=` value, `:of-type`, `_text`). A masked value gives no `_content`
  word (search/extract.py).
- `mask_text` masks masked systems' values in free text: the query strings AuditEvents
  record and the URLs logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from fhir_server.access.identifiers import IdentifierSystem, IdentifierTable, identifiers
from fhir_server.errors import Forbidden, Unprocessable

if TYPE_CHECKING:
    from fhir_server.access.policy import AccessPolicy

Doc = dict[str, Any]


def sees_whole(policy: AccessPolicy) -> bool:
    """No token governs the request (auth off), or its token carries a `system/` scope."""
    auth = policy.auth
    return auth is None or any(s.context == "system" for s in auth.scopes)


def masked_value(system: IdentifierSystem, value: str) -> str:
    """The value as a token without `system/` sees it: its last `keep` digits after one
    mask character per digit withheld (separators dropped, so the shape tells nothing)."""
    digits = [c for c in value if c.isalnum()]
    shown = "".join(digits[-system.keep :]) if system.keep else ""
    return system.mask * (len(digits) - len(shown)) + shown


def mask_identifiers(resource: Doc, table: IdentifierTable | None = None) -> None:
    """Mask, in place, the masked identifiers of `resource` and of its contained resources
    (and their value wherever the narrative repeats it)."""
    table = table or identifiers()
    if resource.get("resourceType") not in table.types and not resource.get("contained"):
        return
    _mask_one(resource, table)
    for inner in resource.get("contained") or ():
        if isinstance(inner, dict):
            _mask_one(inner, table)


def _mask_one(resource: Doc, table: IdentifierTable) -> None:
    if resource.get("resourceType") not in table.types:
        return
    whole: list[tuple[str, str]] = []
    for ident in resource.get("identifier") or ():
        if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
            continue
        system = table.of(ident.get("system"))
        if system is None or not system.masked:
            continue
        shown = masked_value(system, ident["value"])
        whole.append((ident["value"], shown))
        ident["value"] = shown
    text = resource.get("text")
    if whole and isinstance(text, dict) and isinstance(text.get("div"), str):
        div = text["div"]
        for value, shown in whole:
            div = div.replace(value, shown)
        text["div"] = div


def unmask_write(policy: AccessPolicy, old: Doc | None, new: Doc) -> Doc:
    """A write by a token that sees masked values: an identifier sent back as it was shown
    (the stored value's masked form) keeps the stored value, so reading a Patient and
    writing it back never overwrites the SSN with its mask; any other value still
    carrying the mask character is refused (422), as it can be no real value."""
    if sees_whole(policy):
        return new
    table = identifiers()
    whole: dict[tuple[str, str], str] = {}
    for ident in (old or {}).get("identifier") or ():
        system = table.of(ident.get("system")) if isinstance(ident, dict) else None
        if system is not None and system.masked and isinstance(ident.get("value"), str):
            whole[(system.key, masked_value(system, ident["value"]))] = ident["value"]
    for ident in new.get("identifier") or ():
        system = table.of(ident.get("system")) if isinstance(ident, dict) else None
        if system is None or not system.masked or not isinstance(ident.get("value"), str):
            continue
        stored = whole.get((system.key, ident["value"]))
        if stored is not None:
            ident["value"] = stored
        elif system.mask and system.mask in ident["value"]:
            raise Unprocessable(
                f"the {system.label} is masked; send the whole value, or the one shown back",
                code="value",
            )
    return new


def view(policy: AccessPolicy, resource: Doc, stored: Mapping[str, Any] | None) -> None:
    """The read-time view: masked identifiers for every token without a `system/` scope."""
    if not sees_whole(policy):
        mask_identifiers(resource)


# Parameters whose values a masked identifier's value could answer without naming its
# system: any `identifier` (a chain's or `_has`'s last part too, `:of-type`), and the word
# searches (`_content` gives no word of it: search/extract.py, but `_text` could).
WORD_PARAMS = frozenset({"_content", "_text", "_filter"})


def _reaches_identifiers(name: str) -> bool:
    parts = re.split(r"[.:]", name)
    return "identifier" in parts or parts[0] in WORD_PARAMS


def refuse_masked_search(policy: AccessPolicy, params: list[tuple[str, str]]) -> None:
    """403 for a search that could find a Patient by a masked identifier, without a
    `system/` scope: one naming the masked system (`<ssn system>|...` in any parameter),
    or an identifier or word search whose value has the system's shape (nine digits)."""
    if sees_whole(policy):
        return
    table = identifiers()
    for name, value in params:
        for system in table.masked:
            named = any(f"{uri}|" in value for uri in system.uris)
            shaped = (
                system.shape is not None
                and _reaches_identifiers(name)
                and system.shape.search(value) is not None
            )
            if named or shaped:
                raise Forbidden(
                    f"searching by {system.label} needs a system/ scope; search by another "
                    "identifier, or use Patient/$match"
                )


def mask_text(text: str, table: IdentifierTable | None = None) -> str:
    """`text` (a query string, a URL) with every masked system's value masked: after
    `<system>|` and wherever the system's `shape` matches (a bare `identifier=` value, a
    `_content` word), percent-encoded or not."""
    table = table or identifiers()
    if not table.masked or not text:
        return text
    plain = unquote_plus(text) if "%" in text or "+" in text else text
    out = plain
    for system in table.masked:
        for uri in system.uris:
            tail = re.compile(re.escape(uri + "|") + r"([^&,\s]+)")
            out = tail.sub(_masker(system, uri + "|", 1), out)
        if system.shape is not None:
            out = system.shape.sub(_masker(system, "", 0), out)
    return text if out == plain else out


def _masker(system: IdentifierSystem, prefix: str, group: int) -> Callable[[re.Match[str]], str]:
    def sub(m: re.Match[str]) -> str:
        return prefix + masked_value(system, m.group(group))

    return sub


class MaskingFilter(logging.Filter):
    """Masks masked identifiers' values in log records (access logs print query strings)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(mask_text(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = mask_text(record.msg)
        return True


# The loggers that print request URLs (uvicorn's access log, ACCESS_LOG=1; config.py).
URL_LOGGERS = ("uvicorn.access",)


def install_log_masking() -> None:
    """Mask masked identifiers in the records of the loggers that print URLs (once)."""
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, MaskingFilter) for f in logger.filters):
            logger.addFilter(MaskingFilter())
