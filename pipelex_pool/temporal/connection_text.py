"""The connection as people read it (no import of temporalio or cryptography: `status` renders it)."""

from __future__ import annotations


def render_connection(view: dict[str, object]) -> list[str]:
    """The human lines of `connection_view`, for `validate` and `status`."""
    tls = "mTLS" if view["mtls"] else "TLS" if view["tls"] else "no TLS"
    parts = [f"{view['address']} namespace {view['namespace']}, {tls}"]
    if view.get("server_name"):
        parts.append(f"server name {view['server_name']}")
    if view["tls"]:
        parts.append(f"CA {view.get('server_ca_cert') or 'system roots'}")
    if view.get("client_cert"):
        parts.append(f"client cert {view['client_cert']}")
    parts.append(f"API key from {view['api_key']}" if view.get("api_key") else "no API key")
    origins = view.get("from") or {}
    assert isinstance(origins, dict)
    lines = ["; ".join(parts)]
    if origins:
        lines.append("from: " + ", ".join(f"{key} <- {origin}" for key, origin in origins.items()))
    certificates = view.get("certificates") or []
    assert isinstance(certificates, list)
    for cert in certificates:
        lines.append(f"{cert['role']} {cert['file']}: {cert['subject']}, expires {cert['not_after'][:10]} "
                     f"({cert['days_left']} days)")  # fmt: skip
    return lines
