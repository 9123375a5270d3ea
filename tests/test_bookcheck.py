"""The browser check of the built book, on a tiny fake site: each problem is found, a clean page passes."""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from tools import bookcheck

pytestmark = [
    pytest.mark.slow,  # starts headless Chromium three times (~10 s)
    pytest.mark.skipif(not (os.access(bookcheck.CHROMIUM, os.X_OK) and os.access(bookcheck.CHROMEDRIVER, os.X_OK)),
                       reason=f"needs {bookcheck.CHROMIUM} and {bookcheck.CHROMEDRIVER} "
                              "(apt-get install chromium chromium-driver)"),
]

SECRET = "sk-test-canary-7f3a9c21e4"
# A valid 1x1 PNG.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def _page(title: str, body: str) -> str:
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head><body>{body}</body></html>"


CLEAN = _page("Clean", """
<h1 id="clean">Synthetic replies, a clean page</h1>
<p>A figure: <img src="_images/good.png" alt="good"></p>
<p><a href="#clean">this page</a>, <a href="sub/other.html#part">a page below</a>,
   <a href="https://example.com/">an external link (not followed)</a>, <a href="#">top</a></p>
<div class="cell_output"><div class="output stderr"><pre>UserWarning: a harmless warning</pre></div></div>
""")

OTHER = _page("Other", """<h1 id="part">Other</h1><p><a href="../clean.html">back</a>
<img src="../_images/good.png" alt="good"></p>""")

BAD = _page("Bad", f"""
<h1>A page with every problem</h1>
<img src="_images/good.png" alt="good">
<img src="_images/missing.png" alt="broken">
<p><a href="nowhere.html">a broken link</a> <a href="clean.html#no-such-anchor">a missing anchor</a></p>
<p>The data were read from /work/x/data.json on the build machine.</p>
<div class="cell_output docutils container"><div class="output traceback highlight-ipythontb notranslate">
<pre>Traceback (most recent call last):
  Cell In[3], line 1
ZeroDivisionError: division by zero</pre></div></div>
<div class="output stderr"><pre>ValueError: bad input</pre></div>
<script>const key = "{SECRET}";</script>
""")

# Enough of Sphinx's search page for the check: ?q= → loads searchindex.js → summary + results list.
SEARCH = _page("Search", """
<div id="search-results"></div>
<script src="searchindex.js"></script>
<script>
  const q = new URLSearchParams(location.search).get("q") || "";
  const hits = (window.INDEX[q.toLowerCase()] || []);
  const out = document.getElementById("search-results");
  const s = document.createElement("p"); s.className = "search-summary";
  s.innerText = hits.length ? `Search finished, found ${hits.length} page(s).` : "Your search did not match any documents.";
  const ul = document.createElement("ul"); ul.className = "search";
  for (const h of hits) { const li = document.createElement("li"); li.innerHTML = `<a href="${h}">${h}</a>`; ul.appendChild(li); }
  out.append(s, ul);
</script>
""")


def _site(root: Path, *, bad: bool) -> Path:
    (root / "_images").mkdir(parents=True)
    (root / "_images" / "good.png").write_bytes(PNG)
    (root / "sub").mkdir()
    (root / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=clean.html" />')
    (root / "clean.html").write_text(CLEAN)
    (root / "sub" / "other.html").write_text(OTHER)
    (root / "search.html").write_text(SEARCH)
    (root / "searchindex.js").write_text("window.INDEX = " + json.dumps({"synthetic": ["clean.html"]}) + ";")
    if bad:
        (root / "bad.html").write_text(BAD)
    return root


def test_every_problem_is_found_and_clean_pages_pass(tmp_path: Path) -> None:
    site = _site(tmp_path / "html", bad=True)
    notebooks = tmp_path / "executed"
    notebooks.mkdir()
    (notebooks / "01.ipynb").write_text(json.dumps({"cells": [], "metadata": {"key": SECRET}}))
    (notebooks / "02.ipynb").write_text(json.dumps({"cells": []}))
    shots = tmp_path / "shots"

    report = bookcheck.check_book(site, [SECRET], shots, notebooks=notebooks)

    assert not report.ok
    assert set(report.pages) == {"bad.html", "clean.html", "index.html", "search.html", "sub/other.html"}
    problems = [str(p) for p in report.by_page()["bad.html"]]
    text = "\n".join(problems)
    assert report.kinds("bad.html") == {"image", "link", "local-path", "error-output", "secret"}
    assert "_images/missing.png" in text and "good.png" not in text
    assert "'nowhere.html': no such file nowhere.html" in text
    assert "no id 'no-such-anchor' in clean.html" in text
    assert "/work/x/data.json" in text
    assert "ZeroDivisionError" in text and "ValueError: bad input" in text
    assert SECRET not in text  # the report names a secret by number, never by value
    assert report.kinds("executed/01.ipynb") == {"secret"} and not report.kinds("executed/02.ipynb")
    for page in ("clean.html", "sub/other.html", "index.html", "search.html"):
        assert not report.kinds(page), report.format()
    assert report.search == {"query": "synthetic", "results": 1, "summary": "Search finished, found 1 page(s)."}
    assert sorted(Path(p).name for p in report.screenshots) == ["bad.png", "clean.png", "sub__other.png"]
    assert all(Path(p).stat().st_size > 1000 for p in report.screenshots)
    assert "FAILED" in report.format() and "bad.html" in report.format()


def test_a_clean_site_passes_and_the_cli_exits_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    site = _site(tmp_path / "html", bad=False)
    monkeypatch.setenv("BOOKCHECK_TEST_KEY", SECRET)
    assert bookcheck.main([str(site), "--secret-env", "BOOKCHECK_TEST_KEY"]) == 0
    assert "OK: no problems found" in capsys.readouterr().out


def test_the_cli_exits_non_zero_with_a_readable_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    site = _site(tmp_path / "html", bad=True)
    monkeypatch.setenv("BOOKCHECK_TEST_KEY", SECRET)
    assert bookcheck.main([str(site), "--secret-env", "BOOKCHECK_TEST_KEY", "--search-word", "nothingmatches"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: 8 problem(s) on 2 page(s)\nbad.html\n  - [error-output]" in out
    assert "  - [image] '_images/missing.png' did not load (no such file _images/missing.png)" in out
    assert "[search] no results for 'nothingmatches'" in out
    assert "secret #1 = $BOOKCHECK_TEST_KEY" in out and SECRET not in out


def test_a_missing_site_is_an_error_not_a_pass(tmp_path: Path) -> None:
    with pytest.raises(bookcheck.BookCheckError):
        bookcheck.check_book(tmp_path / "nothing")
    assert bookcheck.main([str(tmp_path / "nothing")]) == 2
