"""Open every page of the table of contents in headless Chromium and check it as a reader would.

Serves the built HTML on 127.0.0.1, then for each page: it loads (HTTP 200), no console errors or
failed requests, every image loaded and visible, every internal link resolves, MathJax rendered
(no raw $$ or \\( left outside code), one screenshot per page in --screens.

Usage: python scripts/book_check.py _build/html --screens _build/screens
Uses Debian's chromium (/usr/bin/chromium); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import sys
import threading
from pathlib import Path
from urllib.parse import urljoin, urlparse

import yaml
from playwright.sync_api import sync_playwright

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


def toc_pages() -> list[str]:
    toc = yaml.safe_load(open(ROOT / "_toc.yml"))
    files = [toc["root"]]
    chapters = list(toc.get("chapters", [])) + [c for part in toc.get("parts", []) for c in part.get("chapters", [])]
    for chapter in chapters:
        files.append(chapter["file"])
        files += [s["file"] for s in chapter.get("sections", [])]
    return [f + ".html" for f in files]


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
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=20000)
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
    args = ap.parse_args()
    if not (args.html / "index.html").exists():
        print(f"error: {args.html}/index.html not found: run make book first", file=sys.stderr)
        return 2
    if not Path(args.chromium).exists():
        print(f"error: no chromium at {args.chromium}: apt-get install chromium", file=sys.stderr)
        return 2
    args.screens.mkdir(parents=True, exist_ok=True)
    server, base = serve(args.html)
    pages, problems = toc_pages(), []
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
