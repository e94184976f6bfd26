"""Sending one notification: a rest-hook POST or an email. Each raises `Failed` with a
reason safe to store (no content, no address) when the other side did not take it.

- rest-hook: the notification Bundle POSTed to the endpoint with the subscription's own
  headers (http://hl7.org/fhir/uv/subscriptions-backport/channels.html#rest-hook); any 2xx
  is taken.
- email: through SMTP (`SMTP_URL`: `smtp://[user:password@]host[:port]`, `smtps://` for
  TLS from the start, `smtp+starttls://` to upgrade); with no SMTP_URL outside production,
  an .eml file per notification in `DATA_DIR/outbox/` (named by the notification's id, so a
  repeated delivery rewrites the same file).
"""

from __future__ import annotations

import asyncio
import os
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import orjson

from fhir_server.notify.table import Email

Doc = dict[str, object]


class Failed(Exception):
    """The notification was not taken; the message is stored as the reason."""


async def post_hook(
    http: httpx.AsyncClient, endpoint: str, headers: list[str], mime: str, bundle: Doc
) -> None:
    sent = {"Content-Type": mime}
    for h in headers:
        name, _, value = h.partition(":")
        sent[name.strip()] = value.strip()
    try:
        r = await http.post(endpoint, content=orjson.dumps(bundle), headers=sent)
    except httpx.HTTPError as exc:
        raise Failed(f"the endpoint could not be reached ({type(exc).__name__})") from None
    if not 200 <= r.status_code < 300:
        raise Failed(f"the endpoint answered {r.status_code}")


def message(email: Email, to: str, portal: str, message_id: str) -> EmailMessage:
    """The email: that a message arrived and where to read it, nothing else."""
    msg = EmailMessage()
    msg["From"] = email.sender
    msg["To"] = to
    msg["Subject"] = email.subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(idstring=message_id, domain="mhs.example.org")
    msg.set_content(email.text(portal))
    return msg


def _smtp_send(url: str, msg: EmailMessage, timeout_s: float) -> None:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or "localhost"
    if scheme == "smtps":
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            host, parts.port or 465, timeout=timeout_s, context=ssl.create_default_context()
        )
    else:
        client = smtplib.SMTP(host, parts.port or 25, timeout=timeout_s)
    with client:
        if scheme == "smtp+starttls":
            client.starttls(context=ssl.create_default_context())
        if parts.username:
            client.login(unquote(parts.username), unquote(parts.password or ""))
        client.send_message(msg)


async def send_email(smtp_url: str, msg: EmailMessage, timeout_s: float) -> None:
    try:
        await asyncio.to_thread(_smtp_send, smtp_url, msg, timeout_s)
    except (OSError, smtplib.SMTPException) as exc:
        raise Failed(f"the mail server did not take the email ({type(exc).__name__})") from None


def write_outbox(folder: Path, name: str, msg: EmailMessage) -> Path:
    """Development: the email as an .eml file, written whole or not at all."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.eml"
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(msg.as_bytes())
    os.replace(tmp, path)
    return path
