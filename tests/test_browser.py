"""Open every page of the built site in headless Debian Chromium with the network cut off.

Checks what a reader would see offline: no console errors, MathJax typesets every page that has
math (no TeX errors), every image has loaded, every internal link (and #anchor) resolves; the
results page is a claims ledger (at least 25 rows, each with a verdict and a link that resolves);
no output area holds progress-bar text; the converted chapters show their tables as HTML tables
that fit a 1280 px window. Saves a full-page screenshot of every page at 1280 px under
_build/screenshots/ (and the Method chapter's to artifacts/method.png). Uses the built site in
_build/html, or builds it (`python -m nora.book build`) when there is none.
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
SCREENSHOTS = ROOT / "_build" / "screenshots"
RESULTS_PAGE = "book/results.html"
MATH_CLASS = 'class="math notranslate nohighlight"'
MIN_LEDGER_ROWS = 25
# Chapters whose result tables are HTML tables (nora.experiments.tables): all ten.
CONVERTED_CHAPTERS = ("01_pade_density", "02_ntk_complementarity", "03_method", "04_vit_transfer", "05_group_scaling",
                      "06_llama_instruct", "07_ablations", "08_efficiency", "09_analysis", "10_loran")
PROGRESS_TEXT = re.compile(r"it/s|s/it|%\|")  # tqdm: "3.2it/s", "1.5s/it", " 40%|####  |"


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
    # index.html is a bare redirect with no <link rel="icon">: browsers then ask for /favicon.ico
    assert (site / "favicon.ico").is_file(), "favicon.ico missing from the site root"


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


def _open(driver, url: str) -> None:
    """Load a page and wait for MathJax (when the page has it) to finish typesetting."""
    driver.get(url)
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const wait = () => document.readyState === 'complete' ? "
        "(window.MathJax && MathJax.startup ? MathJax.startup.promise : Promise.resolve()).then(() => done(true)) "
        ": setTimeout(wait, 50); wait();"
    )


def _full_page_png(driver) -> bytes:
    """A screenshot of the whole page at 1280 px wide (a viewport as tall as the page, then back)."""
    height = driver.execute_script("return document.documentElement.scrollHeight;")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1280, "height": min(int(height), 16000), "deviceScaleFactor": 1, "mobile": False})
    try:
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return base64.b64decode(shot["data"])


def test_results_page_is_a_claims_ledger_whose_links_resolve(site, server, driver):
    from nora.experiments.verdicts import VERDICTS

    _open(driver, server + RESULTS_PAGE)
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('table.nora-ledger tbody tr[id^=\"claim-\"]')).map(tr => ({"
        "  id: tr.id, verdict: tr.dataset.verdict,"
        "  badge: (tr.querySelector('.nora-verdict') || {}).textContent,"
        "  links: Array.from(tr.querySelectorAll('a')).map(a => a.href)}));"
    )
    assert len(rows) >= MIN_LEDGER_ROWS, f"the results page has {len(rows)} ledger rows, fewer than {MIN_LEDGER_ROWS}"
    failures, ids_cache = [], {}
    for row in rows:
        if row["verdict"] not in VERDICTS or row["badge"] != row["verdict"]:
            failures.append(f"{row['id']}: verdict {row['verdict']!r} / badge {row['badge']!r}")
        chapter_links = [h for h in row["links"] if "/notebooks/" in h]
        if not chapter_links:
            failures.append(f"{row['id']}: no link to the section that shows it")
        for href in chapter_links:
            url, fragment = urldefrag(href)
            if url not in ids_cache:
                status, body = _fetch(url)
                ids_cache[url] = (status, _ids(body) if body else set())
            status, ids = ids_cache[url]
            if status != 200 or not fragment or fragment not in ids:
                failures.append(f"{row['id']}: {href} does not resolve (HTTP {status}, anchor {fragment!r})")
    counts = driver.execute_script("return (document.querySelector('p.nora-counts') || {}).textContent || '';")
    if f"{len(rows)} claims" not in counts:
        failures.append(f"the verdict counts {counts!r} do not count the {len(rows)} rows")
    assert not failures, "\n".join(failures)


def test_no_output_area_shows_progress_bar_text(site, server, driver):
    failures = []
    for page in _pages(site):
        if "cell_output" not in (site / page).read_text():
            continue
        _open(driver, server + page)
        texts = driver.execute_script("return Array.from(document.querySelectorAll('.cell_output')).map(e => e.textContent);")
        for text in texts:
            match = PROGRESS_TEXT.search(text)
            if match:
                start = max(0, match.start() - 40)
                failures.append(f"{page}: progress-bar text {text[start:match.end() + 20]!r}")
                break
    assert not failures, "\n".join(failures)


def _is_text_table(text: str) -> bool:
    """A pandas ``to_string()`` table: three or more lines with at least two column gaps of 2+ spaces."""
    return sum(bool(re.search(r"\S {2,}\S.*\S {2,}\S", line)) for line in text.splitlines()) >= 3


def test_converted_chapters_show_html_tables_that_fit_1280_px(site, server, driver):
    failures = []
    for chapter in CONVERTED_CHAPTERS:
        page = f"notebooks/{chapter}.html"
        if not (site / page).is_file():
            failures.append(f"{page} is not in the built site")
            continue
        _open(driver, server + page)
        report = driver.execute_script(
            "const out = {width: window.innerWidth, tables: [], pres: []};"
            "document.querySelectorAll('.cell_output table').forEach(t => {"
            "  const cap = t.querySelector('caption');"
            "  let over = null;"
            "  for (let e = t.parentElement; e; e = e.parentElement) {"
            "    if (e.scrollWidth > e.clientWidth + 1) { over = [e.className, e.scrollWidth, e.clientWidth]; break; }"
            "    if (e.classList.contains('cell_output')) break; }"
            "  out.tables.push({caption: cap ? cap.textContent.slice(0, 70) : t.id, over: over}); });"
            "document.querySelectorAll('.cell_output pre').forEach(p => out.pres.push(p.textContent));"
            "return out;"
        )
        assert report["width"] == 1280, f"the window is {report['width']} px wide, not 1280"
        if not report["tables"]:
            failures.append(f"{page}: no result table is an HTML table")
        for table in report["tables"]:
            if table["over"]:
                failures.append(f"{page}: table {table['caption']!r} overflows its output area {table['over']}")
        for text in report["pres"]:
            if _is_text_table(text):
                failures.append(f"{page}: a text table in an output: {text[:120]!r}")
    assert not failures, "\n".join(failures)


def test_every_page_has_a_full_page_screenshot(site, server, driver, capsys):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()
    small = []
    for page in _pages(site):
        _open(driver, server + page)
        path = SCREENSHOTS / (page.removesuffix(".html").replace("/", "__") + ".png")
        path.write_bytes(_full_page_png(driver))
        if path.stat().st_size < 10_000:
            small.append(path.name)
    assert not small, f"(nearly) empty screenshots: {small}"
    with capsys.disabled():
        print(f"\nfull-page screenshots at 1280 px: {SCREENSHOTS}")


def test_method_chapter_screenshot(site, server, driver, capsys):
    if not (site / METHOD_PAGE).is_file():
        pytest.fail(f"{METHOD_PAGE} is not in the built site")
    _open(driver, server + METHOD_PAGE)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.write_bytes(_full_page_png(driver))
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
