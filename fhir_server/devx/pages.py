"""Server-rendered pages for developers: the landing page at `/` and the browsable OpenAPI
document at `/openapi` (no script, no CDN: plain HTML from the document itself). Every
value rendered goes through html.escape. See docs/rest.md, "For developers"."""

from __future__ import annotations

from html import escape
from typing import Any

Doc = dict[str, Any]
STYLE = """
body{font-family:system-ui,sans-serif;max-width:64rem;margin:2rem auto;padding:0 1rem;
line-height:1.5;color:#1b1b1b}h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}th,td{border:1px solid #bbb;
padding:.25rem .5rem;text-align:left;vertical-align:top}code,pre{font-family:ui-monospace,
monospace;font-size:.9rem}pre{background:#f4f4f4;padding:.6rem;overflow-x:auto}
a{color:#0b4f8a}.note{color:#555;font-size:.9rem}.method{font-weight:bold}
"""
METHODS = ("get", "post", "put", "patch", "delete")


def page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )


def _link(href: str, text: str) -> str:
    return f'<a href="{escape(href)}">{escape(text)}</a>'


def landing(
    *,
    base: str,
    origin: str,
    docs: list[str],
    logins: list[Doc] | None,
) -> str:
    """`logins`: the development seed logins, None in production (never shown there)."""
    links = [
        ("FHIR base URL", base, base),
        ("CapabilityStatement", f"{base}/metadata", "/fhir/metadata"),
        (
            "SMART configuration",
            f"{base}/.well-known/smart-configuration",
            "/fhir/.well-known/smart-configuration",
        ),
        ("OpenAPI 3 document", f"{origin}/openapi.json", "/openapi.json"),
        ("API reference (browsable)", f"{origin}/openapi", "/openapi"),
        ("Patient portal app", f"{origin}/portal/", "/portal/"),
    ]
    rows = "".join(
        f'<tr><th scope="row">{escape(what)}</th><td>{_link(href, url)}</td></tr>'
        for what, url, href in links
    )
    doc_links = "".join(f"<li>{_link(f'/docs/{name}', name)}</li>" for name in docs)
    docs_html = f"<h2>Documentation</h2><ul>{doc_links}</ul>" if docs else ""
    logins_html = ""
    if logins is not None:
        login_rows = "".join(
            "<tr>"
            f"<td>{escape(x['role'])}</td><td><code>{escape(x['username'])}</code></td>"
            f"<td><code>{escape(x['password'])}</code></td><td>{escape(x['login'])}</td>"
            f"<td><code>{escape(x['fhirUser'])}</code></td>"
            f"<td>{escape(', '.join(x.get('acts_for', [])) or '-')}</td>"
            "</tr>"
            for x in logins
        )
        first = logins[0]["username"] if logins else "james.carter"
        logins_html = (
            "<h2>Development logins</h2>"
            '<p class="note">Synthetic people from <code>seed_data/logins.json</code>; '
            "shown only in development (<code>FHIR_ENV</code> is not "
            "<code>production</code>).</p>"
            "<table><thead><tr><th>role</th><th>username</th><th>password</th>"
            "<th>sign-in</th><th>FHIR user</th><th>acts for</th></tr></thead>"
            f"<tbody>{login_rows}</tbody></table>"
            "<h2>A token in one command</h2>"
            f"<pre>TOKEN=$(fhir-server token --login {escape(first)} --scope "
            '"patient/*.rs")\n'
            f'curl -H "Authorization: Bearer $TOKEN" {escape(base)}/Patient</pre>'
        )
    body = (
        "<h1>MHS FHIR R4 server</h1>"
        "<p>A FHIR R4 (4.0.1) health-record server for a patient portal and its partners, "
        "with a SMART App Launch 2.2 authorization server. Every FHIR request except the "
        "CapabilityStatement needs a bearer token.</p>"
        f"<table><tbody>{rows}</tbody></table>"
        f"{docs_html}{logins_html}"
    )
    return page("MHS FHIR R4 server", body)


def _tags(doc: Doc) -> dict[str, list[tuple[str, str, Doc]]]:
    by_tag: dict[str, list[tuple[str, str, Doc]]] = {}
    for path, item in doc["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op:
                for tag in op.get("tags", ["System"]):
                    by_tag.setdefault(tag, []).append((method, path, op))
    return by_tag


def openapi_index(doc: Doc) -> str:
    by_tag = _tags(doc)
    rows = "".join(
        f"<tr><td>{_link(f'/openapi/{tag}', tag)}</td><td>{len(by_tag.get(tag, []))}</td></tr>"
        for tag in (t["name"] for t in doc.get("tags", []))
        if tag in by_tag
    )
    server = doc["servers"][0]["url"]
    body = (
        f"<h1>{escape(doc['info']['title'])}: API reference</h1>"
        f"<p>{escape(doc['info'].get('description', ''))}</p>"
        f"<p>Server: <code>{escape(server)}</code>. The whole document: "
        f"{_link('/openapi.json', '/openapi.json')} (OpenAPI {escape(doc['openapi'])}).</p>"
        "<table><thead><tr><th>resource type</th><th>interactions and operations</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
    )
    return page("API reference", body)


def _parameters_table(params: list[Doc]) -> str:
    if not params:
        return ""
    rows = "".join(
        f"<tr><td><code>{escape(p['name'])}</code></td>"
        f"<td>{escape(str(p.get('x-fhir-search-type') or p.get('x-fhir-type') or p.get('type', '')))}</td>"
        f"<td>{escape(p.get('description') or p.get('documentation', ''))}</td></tr>"
        for p in params
    )
    return (
        "<table><thead><tr><th>parameter</th><th>type</th><th>documentation</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _definition_table(params: list[Doc]) -> str:
    if not params:
        return ""
    rows = "".join(
        f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p.get('use', ''))}</td>"
        f"<td>{escape(p.get('type', ''))}</td>"
        f"<td>{escape(str(p.get('min', 0)))}..{escape(str(p.get('max', '1')))}</td>"
        f"<td>{escape(p.get('documentation', ''))}</td></tr>"
        for p in params
    )
    return (
        "<table><thead><tr><th>parameter</th><th>use</th><th>type</th><th>cardinality</th>"
        f"<th>documentation</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def openapi_tag(doc: Doc, tag: str) -> str | None:
    """The page of one resource type (or `System`), or None when the document has none."""
    entries = _tags(doc).get(tag)
    if not entries:
        return None
    server = doc["servers"][0]["url"]
    summary_rows = "".join(
        f'<tr><td class="method">{escape(m.upper())}</td><td><code>{escape(path)}</code></td>'
        f"<td>{escape(op.get('summary', ''))}</td></tr>"
        for m, path, op in entries
    )
    sections = []
    for method, path, op in entries:
        params = [p for p in op.get("parameters", []) if "$ref" not in p]
        definition = op.get("x-fhir-parameters")
        detail = (
            _definition_table(definition)
            + (
                f'<p class="note">OperationDefinition: '
                f"<code>{escape(op['x-fhir-operation-definition'])}</code></p>"
                if op.get("x-fhir-operation-definition")
                else ""
            )
            if definition is not None
            else _parameters_table(params)
        )
        if not detail:
            continue
        sections.append(
            f"<h2>{escape(method.upper())} <code>{escape(path)}</code></h2>"
            f"<p>{escape(op.get('summary', ''))}</p>{detail}"
        )
    body = (
        f"<p>{_link('/openapi', 'API reference')}</p>"
        f"<h1>{escape(tag)}</h1><p>Paths below <code>{escape(server)}</code>.</p>"
        "<table><thead><tr><th>method</th><th>path</th><th>what</th></tr></thead>"
        f"<tbody>{summary_rows}</tbody></table>{''.join(sections)}"
    )
    return page(f"{tag}: API reference", body)
