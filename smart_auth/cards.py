"""CAC and PIV sign-in in production: the client certificate from a TLS-terminating proxy.

The proxy (e.g. nginx with ``ssl_verify_client on`` and the DoD PKI CA bundle) verifies
the card's certificate chain and revocation, then passes the certificate in a header it
always overwrites (``proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert``). The
server trusts that header only when ``AUTH_CLIENT_CERT_HEADER`` names it, and maps the
certificate subject to an account's registered ``cert_subjects`` (FIPS 201-3 / NIST SP
800-73: the PIV Authentication certificate identifies the cardholder). In development the
login form's "CAC"/"PIV" choice stands in for the card (docs/smart.md).
"""

from __future__ import annotations

from urllib.parse import unquote

from cryptography import x509


def certificate_subject(header_value: str) -> str | None:
    """The RFC 4514 subject of a URL-encoded PEM certificate, or None if unreadable."""
    try:
        cert = x509.load_pem_x509_certificate(unquote(header_value).encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return None
    return cert.subject.rfc4514_string()
