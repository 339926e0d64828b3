"""The report page in a real browser: headless Chromium renders `report create --html` output
(with hostile strings from the store in it), the SVG charts have a nonzero size, and the page
makes no network request: a bait server on loopback, named by an unescaped <img> the hostile
strings would become, receives nothing, and Chromium's own net log shows no request but the
page's file. Skipped only where Chromium is not installed (.ci/run installs it)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import shutil
import subprocess
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.verifier.test_compliance_cli import ROOT, agent_envelopes
from verifier.cli import main
from verifier.report_html import render_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
_MEASURE = (
    "<script>document.body.setAttribute('data-sizes', JSON.stringify("
    "Array.from(document.querySelectorAll('svg')).map(function (e) {"
    "var r = e.getBoundingClientRect(); return [e.id, r.width, r.height]; })));</script>"
)


class _Bait(BaseHTTPRequestHandler):
    hits: list[str] = []  # noqa: RUF012 (one server per test)

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


def _statement(tmp_path: Path) -> dict[str, Any]:
    config = tmp_path / "verifier.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\ndatabase = "{tmp_path / "v.db"}"\n'
        'listen = "0.0.0.0:0"\nmetrics_listen = ""\n'
    )
    out = tmp_path / "r.json"
    month = datetime.now(UTC).strftime("%Y-%m")
    with contextlib.redirect_stdout(io.StringIO()):
        registry = str(ROOT / "examples/registry.toml")
        assert main(["--config", str(config), "registry", "import", registry]) == 0
        assert main(["--config", str(config), "ingest", *agent_envelopes(tmp_path, config, 2)]) == 0
        argv = ["report", "create", "--entity", "acme", "--period", month, "--out", str(out)]
        assert main(["--config", str(config), *argv, "--html", str(tmp_path / "r.html")]) == 0
    return dict(json.loads(base64.b64decode(json.loads(out.read_bytes())["payload"])))


def _chromium(tmp_path: Path, page: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    argv = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,2000", *extra, page.as_uri(),
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_page_renders_its_charts_and_reaches_no_network(tmp_path: Path) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Bait)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bait = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        statement = _statement(tmp_path)
        predicate = statement["predicate"]
        hostile = f'<img src="{bait}/name"><script>fetch("{bait}/script")</script>'
        predicate["entity"]["name"] = hostile
        predicate["summary"]["reasons"] = [f'<link rel="stylesheet" href="{bait}/css">']
        page = tmp_path / "page.html"
        text = render_html(statement)
        assert "<script" not in text and "<img" not in text and "<link" not in text
        page.write_text(text)

        net_log = tmp_path / "net.json"
        shot = tmp_path / "page.png"
        done = _chromium(tmp_path, page, f"--screenshot={shot}", f"--log-net-log={net_log}")
        assert shot.exists() and shot.stat().st_size > 1000, done.stderr[-2000:]
        assert _page_requests(net_log) == [], done.stderr[-2000:]
        assert _Bait.hits == []

        # The detection works: a page that does load from the bait is seen both ways.
        control = tmp_path / "control.html"
        control.write_text(f'<!DOCTYPE html><html><body><img src="{bait}/control"></body></html>')
        _chromium(tmp_path, control, f"--screenshot={shot}", f"--log-net-log={net_log}")
        assert f"{bait}/control" in _page_requests(net_log)
        assert _Bait.hits == ["/control"]

        # The same page with a measuring script (and a CSP that lets only it run).
        measured = tmp_path / "measured.html"
        measured.write_text(
            text.replace("default-src 'none'", "default-src 'none'; script-src 'unsafe-inline'")
            .replace("</body>", _MEASURE + "</body>")
        )  # fmt: skip
        dom = _chromium(tmp_path, measured, "--dump-dom").stdout
        found = re.search(r'data-sizes="([^"]*)"', dom)
        assert found is not None, dom[-2000:]
        sizes = json.loads(found[1].replace("&quot;", '"'))
        assert {name for name, _, _ in sizes} == {"chart-countries", "chart-coverage"}
        assert all(width > 0 and height > 0 for _, width, height in sizes), sizes
    finally:
        server.shutdown()
        server.server_close()


def _page_requests(net_log: Path) -> list[str]:
    """URLs requested on behalf of a page: the browser's own background requests (update
    checks, with initiator "not an origin" or none) are Chromium's, not the page's."""
    out = []
    for event in json.loads(net_log.read_text())["events"]:
        params = event.get("params") or {}
        if "url" in params and params.get("initiator") not in (None, "not an origin"):
            out.append(str(params["url"]))
    return out
