"""Open every page of the built site in headless Debian Chromium with the network cut off.

Checks what a reader would see offline: no console errors, MathJax typesets every page that has
math (no TeX errors), every image has loaded, every internal link (and #anchor) resolves. Saves a
screenshot of the Method chapter to artifacts/method.png. Uses the built site in _build/html, or
builds it (`python -m nora.book build`) when there is none.
"""

from __future__ import annotations

import base64
import functools
import http.server
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
METHOD_PAGE = "notebooks/03_method.html"
SCREENSHOT = ROOT / "artifacts" / "method.png"
MATH_CLASS = 'class="math notranslate nohighlight"'


def _missing_browser_reason() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} is missing (apt-get install chromium chromium-driver; `make test` does it)"
    return None


@pytest.fixture(scope="module")
def site() -> Path:
    """The built site; built here when absent."""
    if not (SITE / "index.html").is_file():
        done = subprocess.run([sys.executable, "-m", "nora.book", "build"], cwd=ROOT)
        assert done.returncode == 0, "the strict site build failed"
    return SITE


@pytest.fixture(scope="module")
def server(site: Path):
    """The site over HTTP on 127.0.0.1 (a thread, stopped at the end)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    """Headless Chromium that can resolve nothing but 127.0.0.1."""
    reason = _missing_browser_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser check cannot run in CI: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-default-apps", "--disable-extensions", "--window-size=1280,1600",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    drv.set_page_load_timeout(60)
    drv.set_script_timeout(60)
    yield drv
    drv.quit()


def _pages(site: Path) -> list[str]:
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html") if not {"mathjax", "_static", "_sources", "_images"} & set(p.parts))


def _ids(html: str) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', html)) | set(re.findall(r'\bname="([^"]+)"', html))


def _fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = resp.read()
            kind = resp.headers.get("Content-Type", "")
            return resp.status, body.decode("utf-8", "replace") if "html" in kind else ""
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_site_has_the_toc_pages(site: Path):
    pages = _pages(site)
    for page in ("index.html", "book/intro.html", "book/reproduce.html", "book/results.html", METHOD_PAGE):
        assert page in pages, f"{page} missing from the built site"


def test_every_page_loads_offline_without_console_errors(site, server, driver):
    failures = []
    for page in _pages(site):
        driver.get_log("browser")  # drop what earlier pages left
        driver.get(server + page)
        driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "const wait = () => document.readyState === 'complete' ? done(true) : setTimeout(wait, 50); wait();"
        )
        html = (site / page).read_text()
        if MATH_CLASS in html:
            state = driver.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "const t0 = Date.now();"
                "const wait = () => {"
                "  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {"
                "    MathJax.startup.promise.then(() => done({ok: true,"
                "      containers: document.querySelectorAll('mjx-container').length,"
                "      errors: document.querySelectorAll('mjx-merror').length}),"
                "      (e) => done({ok: false, error: String(e)}));"
                "  } else if (Date.now() - t0 > 20000) { done({ok: false, error: 'MathJax never loaded'}); }"
                "  else { setTimeout(wait, 50); } };"
                "wait();"
            )
            if not state.get("ok"):
                failures.append(f"{page}: {state.get('error')}")
            elif state["containers"] < 1 or state["errors"]:
                failures.append(f"{page}: MathJax typeset {state['containers']} equations with {state['errors']} errors")
        broken = driver.execute_script(
            "return Array.from(document.images)"
            ".filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.currentSrc || img.src);"
        )
        if broken:
            failures.append(f"{page}: images not loaded: {broken}")
        errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        if errors:
            failures.append(f"{page}: console errors: {errors}")
    assert not failures, "\n".join(failures)


def test_every_internal_link_resolves(site, server):
    host = urlparse(server).netloc
    failures, ids_cache = [], {}
    for page in _pages(site):
        html = (site / page).read_text()
        base = server + page
        for href in set(re.findall(r'\bhref="([^"]+)"', html)):
            target = urljoin(base, href.replace("&amp;", "&"))
            url, fragment = urldefrag(target)
            if urlparse(url).scheme not in ("http", "https") or urlparse(url).netloc != host:
                continue  # external (bibliography entries) or mailto:
            if url not in ids_cache:
                status, body = _fetch(url)
                ids_cache[url] = (status, _ids(body) if body else set())
            status, ids = ids_cache[url]
            if status != 200:
                failures.append(f"{page}: {href} -> HTTP {status}")
            elif fragment and ids and fragment not in ids:
                failures.append(f"{page}: {href} -> no element with id {fragment!r}")
    assert not failures, "\n".join(sorted(failures))


def test_method_chapter_screenshot(site, server, driver, capsys):
    if not (site / METHOD_PAGE).is_file():
        pytest.fail(f"{METHOD_PAGE} is not in the built site")
    driver.get(server + METHOD_PAGE)
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "(window.MathJax && MathJax.startup ? MathJax.startup.promise : Promise.resolve()).then(() => done(true));"
    )
    SCREENSHOT.parent.mkdir(exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight;")
    # the whole page, not just the first screen: a viewport as tall as the page, then back
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1280, "height": min(int(height), 16000), "deviceScaleFactor": 1, "mobile": False})
    try:
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
    assert SCREENSHOT.stat().st_size > 10_000, "the screenshot is (nearly) empty"
    assert "Method" in driver.title or "method" in driver.title.lower()
    with capsys.disabled():
        print(f"\nMethod chapter screenshot: {SCREENSHOT}")


def test_network_is_really_cut_off(driver):
    """The resolver rule works: a public host does not resolve (so 'no console errors' above means offline)."""
    try:
        driver.get("https://example.org/")
    except Exception:  # some builds raise on the error page instead of showing it
        pass
    source = driver.page_source
    driver.get_log("browser")
    assert "Example Domain" not in source
    assert "ERR_NAME_NOT_RESOLVED" in source
