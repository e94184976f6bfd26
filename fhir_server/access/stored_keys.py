"""The access keys stored beside a resource (`ak`), so the post-check tests what was stored.

The compartment rules hide resources by a few index keys only (rules.py): security labels
(`_security=<system>|<code>`) and, for some bands, messages by their `sender`/`recipient`
(profiles/access/family.json, `care_team_messages`). At write time the Store keeps those
keys of `ix.k` in a small field, `ak = {"p": [params], "k": [keys]}`, so a read fetches
`res`, `comp` and `ak` and never the index arrays, and the post-check (screen.py) tests
them instead of indexing the resource again (docs/access.md, "The post-check").

`r` (results only: access/release.py) is the instant from which a patient or proxy token
sees the version, absent when it sees it at once; the query tests it against the clock.
`h` (a held Slot only: portal/scheduling/slots.py) is the instant its hold runs out, so a
`status` search can tell a live hold from one that reads as free (search/effective.py).

`p` names the parameters whose keys `k` holds. A document whose `p` does not cover every
parameter a policy's hidden keys name (written before `ak` existed, or before the table
named another parameter) is checked the old way, by indexing its resource again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fhir_server.access import release

Doc = dict[str, Any]
# The search parameter the policy parses sensitive labels with (policy.label_keys).
LABEL_PARAM = "_security"


def key_param(key: str) -> str:
    """The parameter code of an `ix.k` equality key `code=value` (the whole key otherwise)."""
    return key.split("=", 1)[0]


@dataclass(frozen=True)
class AccessKeys:
    """Which parameters' keys a document keeps in `ak`."""

    params: frozenset[str]

    def field(self, keys: Iterable[str]) -> Doc:
        """The stored `ak` of a document whose `ix.k` is `keys`."""
        return {
            "p": sorted(self.params),
            "k": sorted(k for k in keys if key_param(k) in self.params),
        }


@lru_cache(maxsize=1)
def load() -> AccessKeys:
    """From the family table: the label parameter and every message parameter."""
    # Imported here: family.py reads through the Store, which writes `ak` with this module.
    from fhir_server.access.family import load_table

    table = load_table()
    messages = {code for codes in table.message_params.values() for code in codes}
    return AccessKeys(frozenset({LABEL_PARAM, *messages}))


def access_field(keys: Iterable[str], rt: str | None = None, resource: Any = None) -> Doc:
    """`ak` for a document whose index keys (`ix.k`) are `keys`; for a result (`rt`,
    `resource`) also `r`, the instant patient and proxy tokens see it from, when that is
    not at once (access/release.py)."""
    ak = load().field(keys)
    if rt is not None:
        until = release.load_table().hidden_until(rt, resource)
        if until is not None:
            ak["r"] = until
        # Imported here: the scheduling package reads through the Store, which writes `ak`.
        from fhir_server.portal.scheduling.slots import held_until

        expires = held_until(rt, resource)
        if expires is not None:
            ak["h"] = expires
    return ak


def stored_keys(doc: Mapping[str, Any], needed: frozenset[str]) -> tuple[str, ...] | None:
    """The stored keys of `doc` that a policy hiding keys of `needed` parameters tests, or
    None when `doc` cannot answer (no `ak`, or one that does not cover `needed`)."""
    if not needed:
        return ()
    ak = doc.get("ak")
    if not isinstance(ak, Mapping):
        return None
    params, keys = ak.get("p"), ak.get("k")
    if not isinstance(params, list) or not isinstance(keys, list):
        return None
    if not needed <= set(params):
        return None
    return tuple(str(k) for k in keys)
