"""Open every page of the table of contents in headless Chromium and check it as a reader would.

Serves the built HTML on 127.0.0.1, then for each page: it loads (HTTP 200), no console errors or
failed requests, every image loaded and visible, every internal link resolves (its #section too), MathJax rendered
(no raw $$ or \\( left outside code), no output or table wider than the text column (cut off or
scrolled), every image of a cell output inside a numbered figure, every table of a cell output followed
by a link to download its CSV, no reference to the working note
"SPEC" (the book's account is its appendix), and the scorecard page present with its table; one
screenshot per page in --screens.

Usage: python scripts/book_check.py _build/html --screens _build/screens
Uses Debian's chromium (/usr/bin/chromium); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import functools
import re
import http.server
import shutil
import sys
import threading
from pathlib import Path
from urllib.parse import urljoin, urlparse

import yaml
from playwright.sync_api import TimeoutError as PlaywrightTimeout, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

TEXT_OUTSIDE_CODE = """() => {
  const c = document.querySelector('main') || document.body;
  const clone = c.cloneNode(true);
  clone.querySelectorAll('pre, code, .highlight, script, style, mjx-container').forEach(e => e.remove());
  return clone.innerText;
}"""


# Output blocks, tables and code listings whose content is wider than the box the column gives them.
OVERFLOWING = """() => {
  const main = document.querySelector('main') || document.body;
  const column = main.querySelector('article') || main;
  const right = column.getBoundingClientRect().right + 2;
  const found = [];
  main.querySelectorAll('.cell_output pre, .cell_output table, .cell_output img, main table, .output pre')
    .forEach(e => {
      if (e.closest('.toggle-details__container, details:not([open]), .tag_hide-input .cell_input')) return;
      const box = e.getBoundingClientRect();
      if (box.width === 0) return;
      if (e.scrollWidth > e.clientWidth + 2 || box.right > right) {
        found.push(e.tagName.toLowerCase() + ' ' + Math.max(e.scrollWidth, Math.round(box.width)) + ' px: '
                   + (e.innerText || e.getAttribute('src') || '').trim().slice(0, 60).replace(/\\s+/g, ' '));
      }
    });
  return found;
}"""

# Images a cell printed that are not inside a numbered figure (myst-nb glue:figure or a figure directive).
UNNUMBERED_IMAGES = """() => Array.from(document.querySelectorAll('main img')).filter(i => {
  const fig = i.closest('figure');
  return !(fig && fig.querySelector('figcaption .caption-number'));
}).map(i => i.getAttribute('src'))"""

# Tables a cell output shows that no CSV download link follows (the next element after the cell).
TABLES_WITHOUT_CSV = """() => Array.from(document.querySelectorAll('main .cell_output table')).filter(t => {
  let next = t.closest('.cell').nextElementSibling;
  const link = next && next.querySelector('a.download[href$=".csv"], a[download][href$=".csv"]');
  return !link;
}).map(t => (t.querySelector('caption, th') || t).innerText.trim().slice(0, 60))"""

SCORECARD_PAGE = "book/notebooks/scorecard.html"


def toc_pages() -> list[str]:
    toc = yaml.safe_load(open(ROOT / "_toc.yml"))
    files = [toc["root"]]
    chapters = list(toc.get("chapters", [])) + [c for part in toc.get("parts", []) for c in part.get("chapters", [])]
    for chapter in chapters:
        files.append(chapter["file"])
        files += [s["file"] for s in chapter.get("sections", [])]
    return [f + ".html" for f in files]


@functools.lru_cache(maxsize=None)
def anchors(page: Path) -> str:
    """The HTML of a built page, to look up the ids a link's #fragment may name."""
    return page.read_text(errors="replace")


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def check_page(page, base: str, rel: str, html_dir: Path, screens: Path) -> list[str]:
    problems, console, failed = [], [], []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(str(e)))
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.on("response", lambda r: failed.append(f"{r.url} (HTTP {r.status})") if r.status >= 400 else None)
    url = urljoin(base, rel)
    response = page.goto(url, wait_until="load")
    if response is None or response.status != 200:
        return [f"{rel}: HTTP {response.status if response else 'no response'}"]
    has_math = page.evaluate("() => document.querySelectorAll('.math, .MathJax, mjx-container').length") > 0
    if has_math:
        try:
            page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=20000)
        except PlaywrightTimeout:
            return [f"{rel}: math on the page (perhaps in the sidebar) but MathJax is not loaded: raw TeX shown"]
        page.evaluate("() => MathJax.startup.promise")
        if page.evaluate("() => document.querySelectorAll('mjx-container').length") == 0:
            problems.append(f"{rel}: math present but MathJax rendered nothing")
    text = page.evaluate(TEXT_OUTSIDE_CODE)
    for raw in ("$$", "\\(", "\\["):
        if raw in text:
            problems.append(f"{rel}: raw math {raw!r} left in the text")
    images = page.evaluate("""() => Array.from(document.querySelectorAll('main img')).map(i => (
        {src: i.src, ok: i.complete && i.naturalWidth > 0, w: i.getBoundingClientRect().width}))""")
    for img in images:
        if not img["ok"] or img["w"] <= 0:
            problems.append(f"{rel}: broken or invisible image {img['src']}")
    for block in page.evaluate(OVERFLOWING):
        problems.append(f"{rel}: wider than the column: {block}")
    for src in page.evaluate(UNNUMBERED_IMAGES):
        problems.append(f"{rel}: image without a numbered caption: {src}")
    for first in page.evaluate(TABLES_WITHOUT_CSV):
        problems.append(f"{rel}: table without a CSV download link after it: {first}")
    if re.search(r"\bSPEC\b", page.evaluate("() => (document.querySelector('main') || document.body).innerText")):
        problems.append(f"{rel}: mentions SPEC, a working note the reader cannot see (cite the appendix)")
    if rel == SCORECARD_PAGE and page.evaluate("() => document.querySelectorAll('main table tbody tr').length") < 5:
        problems.append(f"{rel}: the scorecard page has no table of claims")
    links = page.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    for href in links:
        parsed = urlparse(href)
        if not href.startswith(base):
            continue
        target = html_dir / parsed.path.lstrip("/")
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            problems.append(f"{rel}: broken internal link {href}")
        elif parsed.fragment and target.suffix == ".html" and f'id="{parsed.fragment}"' not in anchors(target):
            problems.append(f"{rel}: link to a missing section {href}")
    problems += [f"{rel}: console error: {c}" for c in console]
    problems += [f"{rel}: failed request: {u}" for u in failed]
    shot = screens / (rel.replace("/", "__").removesuffix(".html") + ".png")
    page.screenshot(path=str(shot), full_page=True)
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("html", type=Path)
    ap.add_argument("--screens", type=Path, default=Path("_build/screens"))
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--only", action="append", default=[], help="check only pages whose path contains this")
    args = ap.parse_args()
    if not (args.html / "index.html").exists():
        print(f"error: {args.html}/index.html not found: run make book first", file=sys.stderr)
        return 2
    if not Path(args.chromium).exists():
        print(f"error: no chromium at {args.chromium}: apt-get install chromium", file=sys.stderr)
        return 2
    args.screens.mkdir(parents=True, exist_ok=True)
    pages, problems = toc_pages(), []
    if SCORECARD_PAGE not in pages:
        problems.append(f"{SCORECARD_PAGE}: not in _toc.yml (the reproduction scorecard page is missing)")
    if args.only:
        pages = [p for p in pages if any(o in p for o in args.only)]
    server, base = serve(args.html)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            for rel in pages:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                found = check_page(page, base, rel, args.html, args.screens)
                print(f"{'ok ' if not found else 'BAD'} {rel}")
                problems += found
                page.close()
            browser.close()
    finally:
        server.shutdown()
    for p in problems:
        print("  " + p)
    print(
        f"book-check: {len(pages) - len({p.split(':')[0] for p in problems})} passed, "
        f"{len({p.split(':')[0] for p in problems})} failed; screenshots in {args.screens}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
