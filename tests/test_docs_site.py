"""The documentation site builds without a warning, documents every public name, and renders.

The site is built once per session into ``docs/_build/html`` (or taken from
``MPT_DOCS_HTML``, which ``nox -s docs`` sets after its own build). Headless Chromium (the
Debian package ``chromium``) then opens pages served from loopback; the screenshots are
saved under ``docs/_build/screenshots/``.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import mpt_async
import mpt_async.testing

from .docs_examples import ROOT

BUILD = ROOT / "docs" / "_build"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,1400",
]


@pytest.fixture(scope="session")
def site() -> Path:
    """The built HTML site (built here, with warnings as errors, unless given)."""
    given = os.environ.get("MPT_DOCS_HTML")
    if given:
        return Path(given)
    pytest.importorskip("sphinx", reason="needs the docs extra: pip install -e '.[docs]'")
    out = BUILD / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html"]
    result = subprocess.run(
        [*cmd, str(ROOT / "docs"), str(out)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr
    return out


def _inventory(site: Path) -> set[str]:
    from sphinx.util.inventory import InventoryFile

    with (site / "objects.inv").open("rb") as f:
        inventory = InventoryFile.load(f, "", posixpath_join)
    return {name for kind in inventory.values() for name in kind}


def posixpath_join(*parts: str) -> str:
    """Join URL parts (the inventory loader's signature)."""
    return "/".join(parts)


@pytest.mark.parametrize("module", [mpt_async, mpt_async.testing], ids=lambda m: m.__name__)
def test_every_public_name_has_a_reference_entry(site: Path, module: object) -> None:
    """Each name of the package's ``__all__`` is documented in the API reference."""
    documented = _inventory(site)
    prefix = module.__name__  # type: ignore[attr-defined]
    missing = [n for n in module.__all__ if f"{prefix}.{n}" not in documented]  # type: ignore[attr-defined]
    assert not missing, f"no reference entry for {missing}"


def test_every_page_is_built(site: Path) -> None:
    """Each Markdown or reST page (not the writers' README) is built, the changelog included."""
    sources = [
        p.relative_to(ROOT / "docs").with_suffix(".html")
        for p in (ROOT / "docs").rglob("*")
        if p.suffix in (".md", ".rst") and "_build" not in p.parts and p.name != "README.md"
    ]
    assert sources
    assert [s for s in sources if not (site / s).is_file()] == []
    changelog = (site / "changelog.html").read_text(encoding="utf-8")
    assert "Unreleased" in changelog


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's headless Chromium; missing, the test skips (fails under CI)."""
    exe = shutil.which("chromium")
    if exe is None:
        reason = "needs headless Chromium: apt-get install chromium (the Debian package)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return exe


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    """The site over HTTP on a free loopback port."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep the test's output clean."""


def _chromium(exe: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)


@pytest.mark.parametrize(
    ("page", "title", "must_show"),
    [
        ("index.html", "mpt_async", ["Tutorial", "How-to guides"]),
        ("reference/api.html", "API reference", ['id="mpt_async.Client"', "chat_stream"]),
    ],
)
def test_page_renders_in_chromium(
    chromium: str, served: str, tmp_path: Path, page: str, title: str, must_show: list[str]
) -> None:
    """Chromium renders the page: its title, the navigation, a code block; a screenshot saved."""
    url = f"{served}/{page}"
    shots = BUILD / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    png = shots / (page.replace("/", "_").removesuffix(".html") + ".png")
    png.unlink(missing_ok=True)
    result = _chromium(chromium, tmp_path, "--dump-dom", f"--screenshot={png}", url)
    assert result.returncode == 0, result.stderr[-2000:]
    html = result.stdout
    found = re.search(r"<title>(.*?)</title>", html, re.DOTALL)
    assert found is not None
    assert title in found.group(1)
    assert 'class="sidebar-tree"' in html  # furo's navigation
    assert '<div class="highlight' in html  # a highlighted code block
    for text in must_show:
        assert text in html
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000  # a blank page compresses to far less


def test_ci_runs_the_docs_session() -> None:
    """The README's second bash block, which .ci/run runs, includes ``nox -s ... docs``."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```bash\n(.*?)^```$", readme, re.MULTILINE | re.DOTALL)
    assert len(blocks) >= 2
    nox_lines = [line.split() for line in blocks[1].splitlines() if line.startswith("nox ")]
    assert any("docs" in words for words in nox_lines)
