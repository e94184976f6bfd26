"""Attachments of secure messages: allowed types, size and magic bytes, and which Binary a
message may point at (profiles/portal/attachments.json; docs/portal.md, "Attachments").

A message carries a file inline (`Attachment.data`) or by `url` naming a Binary uploaded
first (https://hl7.org/fhir/R4/datatypes.html#Attachment, https://hl7.org/fhir/R4/binary.html).
The same content rules apply to both, on every write (plain POST/PUT/PATCH, transaction
entries), before anything is stored:

- a content type not in the table: 415; content larger than the limit: 413;
- bytes that are not what the declared type says (a PDF must start `%PDF-`, text must be
  UTF-8 without NUL): 415, the declared type being wrong for the content sent;
- an attachment `url` must be `Binary/<id>` of a Binary the caller may read whose
  `securityContext` is this message or its thread (`partOf`): 422 otherwise, the same for a
  hidden Binary and a missing one;
- a Binary written by a patient or proxy names a `securityContext` of a listed type (a
  message): 422 otherwise. Which compartments that Binary is in is the store's business
  (profiles/access/compartments.json: it inherits its securityContext's).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhir_server.access.screen import screen
from fhir_server.errors import (
    FhirError,
    Forbidden,
    Issue,
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
)
from fhir_server.portal.hooks import Workflow, WriteEvent
from fhir_server.rest.body import media_type
from fhir_server.search.extract import LOCAL_REF

if TYPE_CHECKING:
    from fhir_server.config import Settings
    from fhir_server.context import ServerContext
    from fhir_server.rest.messages import FhirRequest

Doc = dict[str, Any]
TABLE = Path(__file__).resolve().parents[2] / "profiles" / "portal" / "attachments.json"


@dataclass(frozen=True)
class ContentType:
    name: str
    magic: tuple[bytes, ...] = ()
    text: bool = False

    def matches(self, data: bytes) -> bool:
        if self.text:
            if b"\x00" in data:
                return False
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                return False
            return True
        return any(data.startswith(m) for m in self.magic)


@dataclass(frozen=True)
class MessageType:
    attachments: tuple[str, ...]  # path of the Attachment elements, e.g. payload.contentAttachment
    thread: str  # the element naming the thread (partOf)


@dataclass(frozen=True)
class AttachmentTable:
    max_bytes: int
    types: tuple[ContentType, ...]
    messages: tuple[tuple[str, MessageType], ...]
    binary: str
    patient_security_contexts: frozenset[str]

    def content_type(self, declared: str | None) -> ContentType | None:
        mt = media_type(declared)
        return next((t for t in self.types if t.name == mt), None)

    @property
    def watched(self) -> frozenset[str]:
        return frozenset({self.binary, *(rt for rt, _ in self.messages)})


def parse_table(raw: Any, known_types: frozenset[str] | None = None) -> AttachmentTable:
    """Fail fast: a typo in the table must stop the server, not let any file through."""
    if not isinstance(raw, dict):
        raise ValueError("attachments.json must be an object")
    size = raw.get("max_bytes")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ValueError(f"attachments.json: max_bytes must be a positive integer: {size!r}")
    types = raw.get("types")
    if not isinstance(types, dict) or not types:
        raise ValueError("attachments.json: 'types' must be a non-empty object")
    parsed: list[ContentType] = []
    for name, rule in types.items():
        if not isinstance(name, str) or media_type(name) != name or "/" not in name:
            raise ValueError(f"attachments.json: {name!r} is not a lower-case media type")
        if not isinstance(rule, dict) or set(rule) - {"magic", "text"}:
            raise ValueError(f"attachments.json: {name} needs 'magic' or 'text' only")
        magic = rule.get("magic", [])
        text = rule.get("text", False)
        if not isinstance(magic, list) or not isinstance(text, bool) or bool(magic) == text:
            raise ValueError(f"attachments.json: {name} needs either 'magic' or 'text': true")
        try:
            prefixes = tuple(bytes.fromhex(m) for m in magic)
        except (TypeError, ValueError):
            raise ValueError(f"attachments.json: {name} magic must be hexadecimal") from None
        if any(not p for p in prefixes):
            raise ValueError(f"attachments.json: {name} has an empty magic prefix")
        parsed.append(ContentType(name, prefixes, text))
    messages = raw.get("messages")
    if not isinstance(messages, dict):
        raise ValueError("attachments.json: 'messages' must be an object")
    rows: list[tuple[str, MessageType]] = []
    for rt, rule in messages.items():
        if known_types is not None and rt not in known_types:
            raise ValueError(f"attachments.json: {rt!r} is not a known resource type")
        path, thread = (rule or {}).get("attachments"), (rule or {}).get("thread")
        if not isinstance(path, str) or not path or not isinstance(thread, str) or not thread:
            raise ValueError(f"attachments.json: {rt} needs 'attachments' and 'thread' paths")
        rows.append((rt, MessageType(tuple(path.split(".")), thread)))
    binary = raw.get("binary")
    contexts = raw.get("patient_security_contexts")
    if not isinstance(binary, str) or (known_types is not None and binary not in known_types):
        raise ValueError(f"attachments.json: 'binary' must name a resource type: {binary!r}")
    if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
        raise ValueError("attachments.json: 'patient_security_contexts' must list types")
    if known_types is not None and set(contexts) - known_types:
        raise ValueError(f"attachments.json: unknown types in {contexts!r}")
    return AttachmentTable(size, tuple(parsed), tuple(rows), binary, frozenset(contexts))


def load_table(path: Path = TABLE, known_types: frozenset[str] | None = None) -> AttachmentTable:
    return parse_table(json.loads(path.read_text()), known_types)


# -- the content rules (pure) ------------------------------------------------------------


def check_content(
    table: AttachmentTable, declared: Any, data: Any, where: str, size: Any = None
) -> None:
    """Refuse content the table does not allow: 415 for a type not allowed or bytes that
    are not of the declared type, 413 for content over the limit. `where` is the FHIRPath
    of the element holding the content type, for `issue.expression`."""
    base = where.rsplit(".", 1)[0]
    kind = table.content_type(declared if isinstance(declared, str) else None)
    if kind is None:
        allowed = ", ".join(t.name for t in table.types)
        shown = repr(declared) if isinstance(declared, str) else "no content type"
        raise _refuse(
            UnsupportedMediaType,
            f"{shown} is not an allowed attachment type (allowed: {allowed})",
            where,
        )
    if data is None:
        return
    raw = _decoded(data, f"{base}.data")
    if len(raw) > table.max_bytes:
        raise _refuse(
            PayloadTooLarge,
            f"the attachment of {len(raw)} bytes exceeds the {table.max_bytes} byte limit",
            f"{base}.data",
            code="too-costly",
        )
    if not kind.matches(raw):
        raise _refuse(
            UnsupportedMediaType,
            f"the attachment's content is not {kind.name} as its content type says",
            where,
        )
    if isinstance(size, int) and not isinstance(size, bool) and size != len(raw):
        raise _refuse(
            Unprocessable,
            f"the attachment's size {size} differs from its content's {len(raw)} bytes",
            f"{base}.size",
            code="business-rule",
        )


def _decoded(data: Any, where: str) -> bytes:
    try:
        if not isinstance(data, str):
            raise ValueError
        return base64.b64decode(data, validate=True)
    except (ValueError, binascii.Error):
        raise _refuse(
            Unprocessable, "the attachment's data is not base64", where, code="invalid"
        ) from None


def _refuse(
    kind: type[FhirError], text: str, where: str, *, code: str = "not-supported"
) -> FhirError:
    return kind(text, code=code, issues=[Issue(code, text, expression=(where,))])


def attachments(resource: Doc, path: tuple[str, ...], rt: str) -> list[tuple[str, Doc]]:
    """(FHIRPath, Attachment) for every attachment at `path` (lists walked, indexed)."""
    found: list[tuple[str, Any]] = [(rt, resource)]
    for name in path:
        nxt: list[tuple[str, Any]] = []
        for where, node in found:
            value = node.get(name) if isinstance(node, dict) else None
            if isinstance(value, list):
                nxt += [(f"{where}.{name}[{i}]", v) for i, v in enumerate(value)]
            elif value is not None:
                nxt.append((f"{where}.{name}", value))
        found = nxt
    return [(w, a) for w, a in found if isinstance(a, dict)]


def _reference(value: Any) -> str | None:
    ref = value.get("reference") if isinstance(value, dict) else None
    m = LOCAL_REF.match(ref) if isinstance(ref, str) else None
    return f"{m.group(1)}/{m.group(2)}" if m else None


def _references(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [r for r in (_reference(v) for v in values) if r is not None]


# -- the workflow ----------------------------------------------------------------------


def workflow(settings: Settings, registry: Any) -> Workflow:
    """The attachment checks as a portal workflow (portal/hooks.py): `before` only, so
    a refused file stops the write before anything is stored, in a bundle too."""
    from fhir_server.validation import KNOWN_RESOURCE_TYPES

    table = load_table(known_types=frozenset(KNOWN_RESOURCE_TYPES))
    messages = dict(table.messages)

    async def before(ctx: ServerContext, req: FhirRequest, event: WriteEvent) -> Doc | None:
        new = event.new
        if new is None:
            return new
        if event.rt == table.binary:
            _check_binary(table, req, new, event.old)
        message = messages.get(event.rt)
        if message is not None:
            await _check_message(ctx, req, table, message, event)
        return new

    return Workflow("attachments", table.watched, before=before)


def _check_binary(table: AttachmentTable, req: FhirRequest, new: Doc, old: Doc | None) -> None:
    rt = table.binary
    if old is not None and _same_content(old, new):
        return
    check_content(table, new.get("contentType"), new.get("data"), f"{rt}.contentType")
    auth = req.policy.auth
    if auth is not None and (auth.fhir_user or "").startswith("Patient/"):
        target = _reference(new.get("securityContext"))
        kind = target.split("/", 1)[0] if target else None
        if kind not in table.patient_security_contexts:
            allowed = ", ".join(sorted(table.patient_security_contexts))
            raise _refuse(
                Unprocessable,
                f"a {rt} written by a patient or proxy must name its message ({allowed}) "
                "as securityContext",
                f"{rt}.securityContext",
                code="business-rule",
            )


def _same_content(old: Doc, new: Doc) -> bool:
    return all(old.get(k) == new.get(k) for k in ("contentType", "data", "securityContext"))


async def _check_message(
    ctx: ServerContext,
    req: FhirRequest,
    table: AttachmentTable,
    message: MessageType,
    event: WriteEvent,
) -> None:
    new = event.new or {}
    before = [a for _, a in attachments(event.old or {}, message.attachments, event.rt)]
    own = f"{event.rt}/{event.rid}" if event.rid else None
    contexts = {*_references(new.get(message.thread)), *([own] if own else [])}
    for where, att in attachments(new, message.attachments, event.rt):
        if att in before:
            continue  # already stored with this message: judged when it was written
        declared, data, url = att.get("contentType"), att.get("data"), att.get("url")
        if data is not None:
            check_content(table, declared, data, f"{where}.contentType", att.get("size"))
        if url is not None:
            if declared is not None:
                check_content(table, declared, None, f"{where}.contentType")
            await _check_url(ctx, req, table, url, contexts, att, where)


async def _check_url(
    ctx: ServerContext,
    req: FhirRequest,
    table: AttachmentTable,
    url: Any,
    contexts: set[str],
    att: Doc,
    where: str,
) -> None:
    rt = table.binary
    m = LOCAL_REF.match(url) if isinstance(url, str) else None
    if m is None or m.group(1) != rt or "/_history/" in str(url):
        raise _refuse(
            Unprocessable,
            f"an attachment url must be {rt}/<id> of a {rt} uploaded to this server",
            f"{where}.url",
            code="business-rule",
        )
    # A read under the caller's policy (a read is a search on `_id`), then the post-check:
    # a Binary the caller may not read answers exactly as a missing one.
    unknown = f"{url} is not a {rt} of this message or its thread that this token may read"
    try:
        req.policy.require(rt, "read")
    except Forbidden:
        raise _refuse(Unprocessable, unknown, f"{where}.url", code="business-rule") from None
    visible = req.policy.read_filter(rt)
    doc = await ctx.store.find_visible(rt, m.group(2), visible, session=req.session)
    resource = doc.get("res") if doc is not None else None
    if not isinstance(resource, dict) or not screen(
        req.policy, ctx.store.indexer, resource, where="attachment", stored=doc
    ):
        raise _refuse(Unprocessable, unknown, f"{where}.url", code="business-rule")
    if _reference(resource.get("securityContext")) not in contexts:
        raise _refuse(Unprocessable, unknown, f"{where}.url", code="business-rule")
    declared = att.get("contentType")
    if isinstance(declared, str) and media_type(declared) != media_type(
        resource.get("contentType")
    ):
        raise _refuse(
            UnsupportedMediaType,
            f"the attachment's content type {declared!r} is not that of {url}",
            f"{where}.contentType",
        )
