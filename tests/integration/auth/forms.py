"""Read the one form of a server-rendered page, as a browser would (no CSS selectors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Field:
    tag: str
    type: str
    name: str
    value: str
    checked: bool = False
    id: str = ""


@dataclass
class Form:
    action: str
    method: str
    fields: list[Field] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # for-id -> text

    def by_type(self, type_: str) -> list[Field]:
        return [f for f in self.fields if f.type == type_]

    def submit(
        self, values: dict[str, str] | None = None, button: str | None = None
    ) -> list[tuple[str, str]]:
        """The pairs a browser sends: hidden/text values, checked boxes, the pressed button."""
        values = values or {}
        pairs: list[tuple[str, str]] = []
        for f in self.fields:
            if not f.name:
                continue
            if f.type in ("checkbox", "radio"):
                if f.checked:
                    pairs.append((f.name, f.value))
            elif f.type == "submit":
                if button is not None and f.name == button:
                    pairs.append((f.name, f.value))
            elif f.tag == "select":
                pairs.append((f.name, values.get(f.name, f.value)))
            else:
                pairs.append((f.name, values.get(f.name, f.value)))
        return pairs


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._select: Field | None = None
        self._label_for: str | None = None
        self._label_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").lower()))
        elif tag == "input" and self.forms:
            self.forms[-1].fields.append(
                Field(
                    "input",
                    a.get("type", "text"),
                    a.get("name", ""),
                    a.get("value", ""),
                    "checked" in a,
                    a.get("id", ""),
                )
            )
        elif tag == "button" and self.forms:
            self.forms[-1].fields.append(
                Field("button", a.get("type", "submit"), a.get("name", ""), a.get("value", ""))
            )
        elif tag == "select" and self.forms:
            self._select = Field("select", "select", a.get("name", ""), "", id=a.get("id", ""))
            self.forms[-1].fields.append(self._select)
        elif tag == "option" and self._select is not None:
            if not self._select.value or "selected" in a:
                self._select.value = a.get("value", "")
        elif tag == "label":
            self._label_for = a.get("for")
            self._label_text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "label" and self._label_for and self.forms:
            self.forms[-1].labels[self._label_for] = "".join(self._label_text).strip()
            self._label_for = None

    def handle_data(self, data: str) -> None:
        if self._label_for is not None:
            self._label_text.append(data)


def forms(html: str) -> list[Form]:
    parser = _Parser()
    parser.feed(html)
    return parser.forms


def only_form(html: str) -> Form:
    found = forms(html)
    assert len(found) == 1, f"expected one form, found {len(found)}"
    return found[0]
