"""Check the built book in a real browser before anyone else sees it.

:func:`check_book` serves ``_build/html`` over HTTP on ``127.0.0.1`` (``file://`` would hide broken
links and break the search page), opens every ``.html`` page in headless Chromium through
chromedriver (Selenium, with the system ``/usr/bin/chromium`` and ``/usr/bin/chromedriver``, so
Selenium Manager never downloads a browser; ``$SIMLIB_CHROMIUM`` and ``$SIMLIB_CHROMEDRIVER``
override the two paths) and records, per page:

* ``error-output``  a Jupyter error output (``output traceback`` / ``output error``), a ``stderr``
  output containing "Error", or "Traceback (most recent call last)" anywhere in the page text;
* ``image``         an ``<img>`` that did not load (``img.complete && img.naturalWidth > 0`` fails);
* ``link``          an ``<a href>`` inside the site whose file does not exist, or whose ``#anchor``
  is no ``id`` of the target page;
* ``asset``         a local stylesheet or script (``<link href>``, ``<script src>``) that is missing;
* ``local-path``    ``/work/``, ``/root/``, ``/home/``, ``/tmp/``, ``file://`` or ``site-packages``
  in the page text (collapsed parts included) or in an ``href``/``src`` attribute;
* ``secret``        one of the given secrets in any file of the site (HTML source, ``searchindex.js``,
  ``_sources``...) or in an executed notebook;
* ``search``        ``search.html?q=<a word of the book's title>`` shows no result.

The browser runs offline: every host name except the local server is unresolvable
(``--host-resolver-rules``), so a page that needs the network shows it as a broken image, and a
search that returns results has used the local ``searchindex.js``. Content pages (all but
``search``, ``genindex`` and redirects) are screenshotted at 1280 pixels wide by the document's
height (at most 8000).

Command line (exit 0: clean, 1: problems found, 2: the check could not run)::

    python -m tools.bookcheck _build/html --secret-env OPENAI_API_KEY \\
        --screenshots _build/screenshots --notebooks executed
"""
from __future__ import annotations

import argparse
import functools
import html.parser
import http.server
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

# Debian's chromium and chromium-driver; $SIMLIB_CHROMIUM / $SIMLIB_CHROMEDRIVER point elsewhere.
CHROMIUM = os.environ.get("SIMLIB_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SIMLIB_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROME_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
    # offline: no host name resolves, only the local server (an IP literal) is reachable
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)
LOCAL_PATH_MARKERS = ("/work/", "/root/", "/home/", "/tmp/", "file://", "site-packages")
SKIP_DIRS = frozenset({"_static", "_sources", "_images"})
NON_CONTENT_PAGES = frozenset({"search.html", "genindex.html", "py-modindex.html"})
WINDOW_WIDTH = 1280
MAX_SCREENSHOT_HEIGHT = 8000
PAGE_LOAD_TIMEOUT_S = 60
IMAGE_WAIT_S = 15.0
SEARCH_WAIT_S = 30.0
TRACEBACK = "Traceback (most recent call last)"


class BookCheckError(RuntimeError):
    """The check itself cannot run (no site, no browser, no driver)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one page (``page`` is relative to the site root, or a notebook path)."""

    page: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.detail}"


@dataclass
class Report:
    """What :func:`check_book` looked at and what it found."""

    html_dir: str
    pages: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    screenshots: list[str] = field(default_factory=list)
    notebooks: list[str] = field(default_factory=list)
    search: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def by_page(self) -> dict[str, list[Problem]]:
        """Problems grouped by page, pages in the order they were checked."""
        out: dict[str, list[Problem]] = {}
        for p in self.problems:
            out.setdefault(p.page, []).append(p)
        return out

    def kinds(self, page: str | None = None) -> set[str]:
        """The problem kinds found (on ``page`` only, when given)."""
        return {p.kind for p in self.problems if page is None or p.page == page}

    def format(self) -> str:
        """A readable summary: what was checked, then each failing page and its problems."""
        search = "not checked"
        if self.search:
            search = f"{self.search.get('results', 0)} result(s) for {self.search.get('query')!r}"
        lines = [f"Book check of {self.html_dir}: {len(self.pages)} page(s), "
                 f"{len(self.notebooks)} notebook(s), {len(self.screenshots)} screenshot(s), search: {search}"]
        lines += [f"  note: {n}" for n in self.notes]
        if self.ok:
            lines.append("OK: no problems found")
            return "\n".join(lines)
        grouped = self.by_page()
        lines.append(f"FAILED: {len(self.problems)} problem(s) on {len(grouped)} page(s)")
        for page, problems in grouped.items():
            lines.append(f"{page}")
            lines += [f"  - {p}" for p in problems]
        return "\n".join(lines)


# --------------------------------------------------------------------------- static helpers


class _IdParser(html.parser.HTMLParser):
    """Collects every ``id`` (and ``<a name>``) of an HTML document, and its first ``<h1>`` text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.refresh: str | None = None
        self.h1 = ""  # the text of the first <h1>
        self._h1_state = 0  # 0 before it, 1 inside it, 2 after it

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"] or "")
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"] or "")
        if tag == "meta" and (a.get("http-equiv") or "").lower() == "refresh":
            m = re.search(r"url\s*=\s*(\S+)", a.get("content") or "", re.IGNORECASE)
            self.refresh = m.group(1).strip("'\"") if m else None
        if tag == "h1" and self._h1_state == 0:
            self._h1_state = 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "h1" and self._h1_state == 1:
            self._h1_state = 2

    def handle_data(self, data: str) -> None:
        if self._h1_state == 1:
            self.h1 += data


@functools.cache
def _parse(path: Path) -> _IdParser:
    parser = _IdParser()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


def html_pages(root: Path) -> list[Path]:
    """Every ``.html`` file under ``root`` (sorted), skipping ``_static``, ``_sources``, ``_images``."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames) if f.endswith(".html")]
    return out


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _snippet(text: str, start: int, end: int, width: int = 40) -> str:
    s = text[max(0, start - width):end + width]
    return " ".join(s.split())


def find_local_paths(text: str, limit: int = 3) -> list[str]:
    """Snippets of ``text`` around each local filesystem path marker (at most ``limit`` per marker)."""
    found = []
    for marker in LOCAL_PATH_MARKERS:
        for i, m in enumerate(re.finditer(re.escape(marker), text)):
            if i >= limit:
                break
            found.append(f"{marker!r} in “…{_snippet(text, m.start(), m.end())}…”")
    return found


def scan_secrets(path: Path, secrets: Sequence[str]) -> list[str]:
    """Where each secret occurs in the file at ``path`` (by number: the value is never printed)."""
    data = path.read_bytes()
    out = []
    for i, secret in enumerate(secrets, 1):
        if not secret:
            continue
        needle = secret.encode()
        count = data.count(needle)
        if count:
            line = data[:data.index(needle)].count(b"\n") + 1
            out.append(f"secret #{i} appears {count} time(s), first on line {line}")
    return out


def _search_word(root: Path, pages: list[Path]) -> str | None:
    """A word of the book's first heading: the root page (where ``index.html`` redirects) or the first page."""
    candidates = []
    index = root / "index.html"
    if index.exists() and _parse(index).refresh:
        candidates.append((root / unquote(urlsplit(_parse(index).refresh or "").path)).resolve())
    candidates += pages
    for page in candidates:
        if not page.exists():
            continue
        for word in re.findall(r"[A-Za-z]{5,}", _parse(page).h1):
            if word.lower() not in {"about", "there", "these", "their", "which", "where", "enough"}:
                return word.lower()
    return None


# --------------------------------------------------------------------------- server and browser


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


@dataclass
class _Server:
    root: Path
    httpd: http.server.ThreadingHTTPServer | None = None

    def __enter__(self) -> _Server:
        handler = functools.partial(_QuietHandler, directory=str(self.root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, name="bookcheck-http", daemon=True).start()
        return self

    @property
    def origin(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, rel: str) -> str:
        return f"{self.origin}/{quote(rel)}"

    def __exit__(self, *exc: object) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()


def _start_browser(user_data_dir: str) -> Any:
    """Headless Chromium through the system chromedriver (never Selenium Manager)."""
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not os.access(exe, os.X_OK):
            raise BookCheckError(f"{exe} not found: install Debian's chromium and chromium-driver "
                                 "(or set $SIMLIB_CHROMIUM and $SIMLIB_CHROMEDRIVER)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:  # pragma: no cover - selenium is a dependency
        raise BookCheckError("selenium is not installed (pip install selenium)") from exc
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.add_argument(f"--window-size={WINDOW_WIDTH},900")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
    return driver


# One pass over the loaded page, in the browser: everything the checks need, as JSON.
_COLLECT_JS = r"""
const skip = new Set(['SCRIPT', 'STYLE', 'NOSCRIPT', 'TEMPLATE']);
const walker = document.createTreeWalker(document.body || document.documentElement, NodeFilter.SHOW_TEXT, {
  acceptNode: (n) => (n.parentElement && skip.has(n.parentElement.tagName))
                      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
const parts = [];
while (walker.nextNode()) parts.push(walker.currentNode.nodeValue);
const txt = (e) => (e.textContent || '').trim().slice(0, 300);
return {
  text: parts.join(' '),
  errors: [...document.querySelectorAll('.output.traceback, .output.error')].map(txt),
  stderr: [...document.querySelectorAll('.output.stderr')].map(txt).filter((t) => t.includes('Error')),
  images: [...document.images].map((i) => ({raw: i.getAttribute('src') || '', url: i.currentSrc || i.src,
                                             complete: i.complete, width: i.naturalWidth})),
  links: [...document.querySelectorAll('a[href]')].map((a) => ({raw: a.getAttribute('href'), url: a.href})),
  assets: [...document.querySelectorAll('script[src], link[href]')].map((e) => ({
      raw: e.getAttribute('src') || e.getAttribute('href'), url: e.src || e.href})),
  attrs: [...document.querySelectorAll('[href], [src]')].map((e) => e.getAttribute('href') || e.getAttribute('src')),
  ids: [...document.querySelectorAll('[id]')].map((e) => e.id)
        .concat([...document.querySelectorAll('a[name]')].map((e) => e.name)),
  height: Math.max(document.body ? document.body.scrollHeight : 0, document.documentElement.scrollHeight),
};
"""

_IMAGES_DONE_JS = r"""
for (const i of document.images) if (i.loading === 'lazy') i.loading = 'eager';
return document.readyState === 'complete' && [...document.images].every((i) => i.complete);
"""

_SEARCH_STATE_JS = r"""
const s = document.querySelector('#search-results .search-summary');
return {summary: s ? s.innerText : '', results: document.querySelectorAll('#search-results ul.search > li').length,
        links: [...document.querySelectorAll('#search-results a[href]')].map((a) => ({raw: a.getAttribute('href'), url: a.href})),
        index: performance.getEntriesByType('resource').map((e) => e.name).filter((n) => n.includes('searchindex.js'))};
"""


def _poll(fn: Any, timeout: float, interval: float = 0.1) -> Any:
    """Call ``fn`` until it returns something truthy or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    value = fn()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = fn()
    return value


# --------------------------------------------------------------------------- the checks


class _Checker:
    """Runs every check on the pages of one site with one browser; fills one :class:`Report`."""

    def __init__(self, root: Path, server: _Server, driver: Any, secrets: Sequence[str],
                 screenshot_dir: Path | None, report: Report) -> None:
        self.root, self.server, self.driver = root, server, driver
        self.secrets = [s for s in secrets if s]
        self.screenshot_dir = screenshot_dir
        self.report = report

    def problem(self, page: str, kind: str, detail: str) -> None:
        """Record a problem once (the same broken link twice on a page is one problem)."""
        found = Problem(page, kind, detail)
        if found not in self.report.problems:
            self.report.problems.append(found)

    # -- links ----------------------------------------------------------------------
    def _target(self, url: str) -> tuple[Path, str] | None:
        """The local file and fragment a URL points at, or None when it leaves the site."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or f"{parts.scheme}://{parts.netloc}" != self.server.origin:
            return None
        path = self.root / unquote(parts.path).lstrip("/")
        if unquote(parts.path).endswith("/") or path.is_dir():
            path = path / "index.html"
        return path, unquote(parts.fragment)

    def _check_link(self, page: str, raw: str, url: str, page_ids: set[str], kind: str = "link") -> None:
        target = self._target(url)
        if target is None or raw.startswith(("javascript:", "mailto:", "data:")):
            return
        path, fragment = target
        try:
            rel = _rel(self.root, path.resolve())
        except ValueError:
            self.problem(page, kind, f"{raw!r} points outside the site")
            return
        if not path.is_file():
            self.problem(page, kind, f"{raw!r}: no such file {rel}")
            return
        if kind == "link" and fragment and path.suffix == ".html":
            ids = set(_parse(path.resolve()).ids)
            if rel == page:
                ids |= page_ids
            if fragment not in ids:
                self.problem(page, kind, f"{raw!r}: no id {fragment!r} in {rel}")

    # -- one page -------------------------------------------------------------------
    def check_page(self, path: Path, query: str = "") -> dict[str, Any] | None:
        """Load one page (``query`` appended to its URL) and run every per-page check on it."""
        page = _rel(self.root, path)
        self.report.pages.append(page)
        refresh = _parse(path).refresh
        if refresh is not None:  # a bare redirect (index.html): its target must exist
            self._check_link(page, refresh, urljoin(self.server.url(page), refresh), set())
            return None
        from selenium.common.exceptions import TimeoutException, WebDriverException

        try:
            self.driver.get(self.server.url(page) + query)
        except TimeoutException:
            self.problem(page, "load", f"did not finish loading in {PAGE_LOAD_TIMEOUT_S} s")
        except WebDriverException as exc:
            self.problem(page, "load", f"could not be opened: {exc.msg}")
            return None
        _poll(lambda: self.driver.execute_script(_IMAGES_DONE_JS), IMAGE_WAIT_S)
        data: dict[str, Any] = self.driver.execute_script(_COLLECT_JS)
        page_ids = set(data["ids"])

        for text in data["errors"]:
            self.problem(page, "error-output", f"error output: {' '.join(text.split())[:200]}")
        for text in data["stderr"]:
            self.problem(page, "error-output", f"stderr output with an error: {' '.join(text.split())[:200]}")
        if TRACEBACK in data["text"] and not data["errors"]:
            i = data["text"].index(TRACEBACK)
            context = _snippet(data["text"], i, i + len(TRACEBACK), 80)
            self.problem(page, "error-output", f"a Python traceback in the text: “…{context}…”")

        for img in data["images"]:
            if img["complete"] and img["width"] > 0:
                continue
            target = self._target(img["url"])
            why = "did not load"
            if target is None:
                why += " (not served by the book: external or inline)"
            elif not target[0].is_file():
                why += f" (no such file {_rel(self.root, target[0].resolve())})"
            elif not img["complete"]:
                why += f" (still loading after {IMAGE_WAIT_S:.0f} s)"
            else:
                why += " (the file exists but is not a valid image)"
            self.problem(page, "image", f"{img['raw']!r} {why}")

        for link in data["links"]:
            self._check_link(page, link["raw"] or "", link["url"] or "", page_ids)
        for asset in data["assets"]:
            self._check_link(page, asset["raw"] or "", asset["url"] or "", page_ids, kind="asset")

        for hit in find_local_paths(data["text"]):
            self.problem(page, "local-path", f"in the page text: {hit}")
        for attr in dict.fromkeys(a for a in data["attrs"] if a):
            for marker in LOCAL_PATH_MARKERS:
                if marker in attr:
                    self.problem(page, "local-path", f"in a link or source: {attr!r}")
                    break

        if self.screenshot_dir is not None and path.name not in NON_CONTENT_PAGES:
            self.screenshot(page, int(data["height"] or 0))
        return data

    def screenshot(self, page: str, height: int) -> None:
        """Window 1280 wide by the document height (at most 8000), saved as ``<page path>.png``."""
        assert self.screenshot_dir is not None
        self.driver.set_window_size(WINDOW_WIDTH, max(600, min(height, MAX_SCREENSHOT_HEIGHT)))
        time.sleep(0.3)  # let the layout settle at the new size
        out = self.screenshot_dir / (page[:-len(".html")].replace("/", "__") + ".png")
        if self.driver.save_screenshot(str(out)):
            self.report.screenshots.append(str(out))
        else:
            self.report.notes.append(f"screenshot of {page} failed")
        self.driver.set_window_size(WINDOW_WIDTH, 900)

    # -- search ---------------------------------------------------------------------
    def check_search(self, word: str | None) -> None:
        """``search.html?q=word`` must list results, computed from the local ``searchindex.js``."""
        search = self.root / "search.html"
        if not search.exists():
            self.report.notes.append("no search.html: search not checked")
            return
        if not word:
            self.problem("search.html", "search", "no search word: the book's first page has no heading")
            return
        self.report.search = {"query": word, "results": 0}
        self.check_page(search, query=f"?q={quote(word)}")
        state = _poll(lambda: (lambda s: s if s["summary"] else None)(self.driver.execute_script(_SEARCH_STATE_JS)),
                      SEARCH_WAIT_S, 0.25)
        if not state:
            self.problem("search.html", "search", f"no search summary after {SEARCH_WAIT_S:.0f} s for ?q={word}")
            return
        time.sleep(0.5)  # results are appended one by one after the summary
        state = self.driver.execute_script(_SEARCH_STATE_JS)
        self.report.search.update(results=state["results"], summary=state["summary"])
        local = [u for u in state["index"] if u.startswith(self.server.origin)]
        if not local:
            self.problem("search.html", "search", "searchindex.js was not loaded from the book")
        if not state["results"]:
            self.problem("search.html", "search", f"no results for {word!r}: {state['summary']}")
        for link in state["links"]:  # each result must lead to a page of the book
            self._check_link("search.html", link["raw"] or "", link["url"] or "", set())

    # -- secrets in files -----------------------------------------------------------
    def check_secret_files(self, files: list[Path], base: Path, label_prefix: str = "") -> None:
        for path in files:
            for hit in scan_secrets(path, self.secrets):
                self.problem(label_prefix + _rel(base, path), "secret", hit)


def _files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            yield Path(dirpath) / f


def check_book(html_dir: str | os.PathLike, secrets: Sequence[str] = (), screenshot_dir: str | os.PathLike | None = None,
               *, notebooks: str | os.PathLike | None = None, search_word: str | None = None) -> Report:
    """Check the built book at ``html_dir`` in headless Chromium; see the module docstring.

    ``secrets`` are values that must appear nowhere in the site (every file) nor in the executed
    notebooks under ``notebooks`` (``*.ipynb``, recursively). ``screenshot_dir`` receives one PNG per
    content page. ``search_word`` defaults to a word of the book's first heading.
    Raises :class:`BookCheckError` when the site or the browser is missing.
    """
    root = Path(html_dir).resolve()
    if not root.is_dir():
        raise BookCheckError(f"{html_dir} is not a folder (build the book first)")
    pages = html_pages(root)
    if not pages:
        raise BookCheckError(f"no .html page under {html_dir}")
    _parse.cache_clear()
    report = Report(html_dir=str(html_dir))
    shots = Path(screenshot_dir) if screenshot_dir is not None else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)

    profile = tempfile.mkdtemp(prefix="bookcheck-chromium-")
    try:
        with _Server(root) as server:
            driver = _start_browser(profile)
            try:
                checker = _Checker(root, server, driver, secrets, shots, report)
                for page in pages:
                    if page.name != "search.html":
                        checker.check_page(page)
                checker.check_search(search_word or _search_word(root, pages))
                checker.check_secret_files(list(_files(root)), root)
                if notebooks is not None:
                    nb_dir = Path(notebooks)
                    nbs = sorted(nb_dir.rglob("*.ipynb")) if nb_dir.is_dir() else []
                    if not nbs:
                        report.notes.append(f"no notebook under {notebooks}")
                    report.notebooks = [str(p) for p in nbs]
                    checker.check_secret_files(nbs, nb_dir, label_prefix=f"{nb_dir.resolve().name}/")
            finally:
                driver.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return report


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tools.bookcheck HTML_DIR [...]``: print the report; 0 clean, 1 problems, 2 no check."""
    ap = argparse.ArgumentParser(prog="python -m tools.bookcheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("html_dir", help="the built site, e.g. _build/html")
    ap.add_argument("--secret-env", action="append", default=[], metavar="NAME",
                    help="an environment variable whose value must not appear in the site or notebooks (repeatable)")
    ap.add_argument("--screenshots", metavar="DIR", help="write a PNG of each content page here")
    ap.add_argument("--notebooks", metavar="DIR", help="also scan DIR/**/*.ipynb for the secrets")
    ap.add_argument("--search-word", help="the word searched for (default: from the book's title)")
    args = ap.parse_args(argv)

    secrets, legend = [], []
    for name in args.secret_env:
        value = os.environ.get(name, "")
        if not value:
            print(f"bookcheck: warning: ${name} is not set; it is not checked", file=sys.stderr)
            continue
        secrets.append(value)
        legend.append(f"secret #{len(secrets)} = ${name}")
    try:
        report = check_book(args.html_dir, secrets, args.screenshots, notebooks=args.notebooks,
                            search_word=args.search_word)
    except BookCheckError as exc:
        print(f"bookcheck: cannot check: {exc}", file=sys.stderr)
        return 2
    print(report.format())
    if legend and not report.ok:
        print("(" + "; ".join(legend) + ")")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
