"""HTTPS: with tls_cert and tls_key set the gateway serves TLS (and only TLS)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from .harness import TOKEN, GatewayProcess, child_toml, console_passwd, server_toml

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def make_certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_https_with_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    extra = f'tls_cert = "{cert}"\ntls_key = "{key}"'
    g = GatewayProcess(tmp_path, server_toml(tmp_path, extra=extra) + child_toml("t"))
    try:
        assert g.url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(cert))
        r = httpx.get(g.url + "/health", verify=ctx)
        assert r.status_code in (200, 503)
        r = httpx.post(
            g.url + "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
            headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/json, text/event-stream"},
            verify=ctx,
        )
        assert r.json()["result"]["serverInfo"]["name"] == "portero"
        with pytest.raises(httpx.HTTPError):
            httpx.get(g.url.replace("https://", "http://") + "/health", timeout=3)
    finally:
        g.stop()


def test_tls_cookie_is_secure(tmp_path: Path) -> None:
    """Under TLS the console's session cookie is ``Secure`` (over plain HTTP it cannot be: see
    test_console_e2e.test_login_cookie_headers_and_logout)."""
    import re

    cert, key = make_certificate(tmp_path)
    extra = f'tls_cert = "{cert}"\ntls_key = "{key}"\n[console]\nenabled = true'
    config = tmp_path / "portero.toml"
    config.write_text(server_toml(tmp_path, extra=extra) + child_toml("t"))
    done = console_passwd(config, "a console password 42")
    assert done.returncode == 0, done.stderr
    g = GatewayProcess(tmp_path, config.read_text())
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=g.url + "/console", verify=ctx) as web:
            page = web.get("/login").text
            token = re.search(r'name="csrf" value="([^"]+)"', page)
            assert token
            r = web.post("/login", data={"password": "a console password 42", "csrf": token.group(1)})
            assert r.status_code == 303
            cookie = r.headers["set-cookie"]
            assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    finally:
        g.stop()
