"""The email a patient gets, the development outbox, and the SMTP_URL setting."""

from __future__ import annotations

import pytest

from fhir_server.config import Settings
from fhir_server.notify.delivery import message, write_outbox
from fhir_server.notify.table import load_table
from fhir_server.notify.worker import portal_url

EMAIL = load_table().email


def test_the_email_says_a_message_arrived_and_links_the_portal_only(tmp_path) -> None:
    portal = portal_url("https://portal.example.org/fhir")
    assert portal == "https://portal.example.org/portal/"
    msg = message(EMAIL, "pat@example.org", portal, "n1")
    assert msg["Subject"] == "You have a new secure message"
    assert msg["To"] == "pat@example.org"
    body = msg.get_content()
    assert portal in body and "{portal}" not in body
    # The table's own text: nothing in it but the arrival and the link.
    assert set(body.split()) <= set(EMAIL.body.replace("{portal}", portal).split())
    path = write_outbox(tmp_path / "outbox", "n1", msg)
    assert path.name == "n1.eml" and b"new secure message" in path.read_bytes()
    write_outbox(tmp_path / "outbox", "n1", msg)  # a repeated delivery rewrites the file
    assert [p.name for p in (tmp_path / "outbox").iterdir()] == ["n1.eml"]


def test_smtp_url_is_checked_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_URL", "smtp://mail.example.org:2525")
    assert Settings.from_env().smtp_url == "smtp://mail.example.org:2525"
    monkeypatch.delenv("SMTP_URL")
    assert Settings.from_env().smtp_url == ""
    for bad in ("mail.example.org", "http://mail.example.org", "smtp://", "smtp://h:99999"):
        monkeypatch.setenv("SMTP_URL", bad)
        with pytest.raises(ValueError, match="SMTP_URL"):
            Settings.from_env()
