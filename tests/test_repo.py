"""Repository invariants: every chapter's .md and .ipynb are in sync, the table of contents points
at files that exist, and environment.yml mirrors the pins of pyproject.toml."""

import re
import tomllib
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "book" / "chapters").glob("*.md"))


def code_and_markdown(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells if c.source.strip()]


def test_there_are_chapters():
    assert CHAPTERS, "no chapter sources under book/chapters"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_md_and_ipynb_in_sync(md):
    ipynb = ROOT / "book" / "notebooks" / f"{md.stem}.ipynb"
    assert ipynb.exists(), f"{md.name} has no paired notebook {ipynb.relative_to(ROOT)} (run make sync)"
    a, b = jupytext.read(md), jupytext.read(ipynb)
    assert code_and_markdown(a) == code_and_markdown(b), f"{md.name} and {ipynb.name} differ: run make sync"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_notebooks_are_executed(md):
    nb = jupytext.read(ROOT / "book" / "notebooks" / f"{md.stem}.ipynb")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), "notebook has unexecuted cells: make chapters"
    assert not any(o.get("output_type") == "error" for c in code for o in c.get("outputs", []))


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_every_table_a_cell_builds_is_shown(md):
    """A cell that builds a table with infoflow.figures.table shows it: the call is the cell's last
    statement, so the notebook holds its HTML (a table followed by more statements is never displayed)."""
    nb = jupytext.read(ROOT / "book" / "notebooks" / f"{md.stem}.ipynb")
    for cell in (c for c in nb.cells if c.cell_type == "code"):
        if re.search(r"^table\(", cell.source, re.M):
            shown = any("text/html" in o.get("data", {}) for o in cell.get("outputs", []))
            assert shown, f"{md.name}: a table( call is not the last statement of its cell:\n{cell.source[:200]}"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_every_table_has_a_csv_a_reader_can_download(md):
    """Every table a cell builds is named, so its rows are saved as book/figures/NAME.csv, the file is
    committed, and the markdown right after the cell links it with the {download} role (Sphinx copies
    the file into the built book)."""
    nb = jupytext.read(md)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not re.search(r"(^|[^\w.])table\(", cell.source):
            continue
        names = re.findall(r'name="([\w-]+)"', cell.source)
        assert names, f"{md.name}: a table without a name (no CSV):\n{cell.source[:200]}"
        link = f"{{download}}`Download this table (CSV) <../figures/{names[-1]}.csv>`"
        after = nb.cells[i + 1] if i + 1 < len(nb.cells) else None
        assert after is not None and after.cell_type == "markdown" and after.source.startswith(link), (
            f"{md.name}: the cell building table {names[-1]!r} is not followed by {link}"
        )
        assert (ROOT / "book" / "figures" / f"{names[-1]}.csv").exists(), f"{names[-1]}.csv not written: make chapters"


def test_toc_files_exist():
    toc = yaml.safe_load(open(ROOT / "_toc.yml"))
    files = [toc["root"]] + [c["file"] for c in toc.get("chapters", [])]
    files += [c["file"] for part in toc.get("parts", []) for c in part["chapters"]]
    files += [s["file"] for part in toc.get("parts", []) for c in part["chapters"] for s in c.get("sections", [])]
    assert "book/notebooks/intrinsic-dimension-plateau" in files and "book/restoring-the-paper" in files
    for f in files:
        assert any((ROOT / f"{f}{ext}").exists() for ext in (".md", ".ipynb")), f


def test_environment_mirrors_pyproject():
    project = tomllib.load(open(ROOT / "pyproject.toml", "rb"))["project"]
    pins = list(project["dependencies"])
    for group, deps in project["optional-dependencies"].items():
        pins += [d for d in deps if not d.startswith("infoflow")]
    pins = {re.split("==", p)[0].strip(): p.split("==")[1].strip() for p in pins}
    env = yaml.safe_load(open(ROOT / "environment.yml"))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_pins = {p.split("==")[0]: p.split("==")[1] for p in pip if "==" in p}
    assert env_pins == pins


def test_book_check_visits_every_page_of_the_toc(load_script):
    module = load_script("scripts/book_check.py")
    toc = yaml.safe_load(open(ROOT / "_toc.yml"))
    chapters = [c for p in toc.get("parts", []) for c in p["chapters"]]
    n = 1 + len(toc.get("chapters", [])) + len(chapters) + sum(len(c.get("sections", [])) for c in chapters)
    pages = module.toc_pages()
    assert len(pages) == n == len(set(pages))


def test_benchmark_script_appends_one_json_line(tmp_path):
    """The ensemble-vs-loop benchmark runs (tiny: 2 members, 1 step) and appends a parseable line."""
    import json
    import subprocess
    import sys

    out = tmp_path / "results.jsonl"
    for _ in range(2):
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "bench_ensemble.py"),
                "--members",
                "2",
                "--steps",
                "1",
                "--repeats",
                "1",
                "--device",
                "cpu",
                "--out",
                str(out),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 2
    r = lines[-1]
    assert r["config"]["members"] == 2 and r["device"] == "cpu" and r["git_commit"] is not None
    assert r["ratio"] == pytest.approx(r["ensemble_samples_per_s"] / r["loop_samples_per_s"], rel=0.02)


def test_profile_timing_script_fits_and_extrapolates(tmp_path):
    """time_profile.py runs a tiny sweep from scratch at two step counts, fits t = a + b·N through
    both (exact for two points), extrapolates to the profile's steps and (--verify) measures them;
    a bad --run, or --set train.steps, is refused."""
    import json
    import subprocess
    import sys

    out = tmp_path / "results.jsonl"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "time_profile.py"),
        "--profile",
        "quick",
        "--steps",
        "4",
        "8",
        "--device",
        "cpu",
        "--run",
        "probes-paper-shapes:1",
        "--set",
        "configs=[[5,5],[6,6]]",
        "--set",
        "train.eval_every=100",
        "--set",
        "train.batch=16",
        "--set",
        "train.n_val=64",
        "--out",
        str(out),
    ]
    subprocess.run(cmd + ["--verify"], check=True, capture_output=True, timeout=300, cwd=ROOT)
    (r,) = [json.loads(line) for line in out.read_text().splitlines()]
    e = r["experiments"]["probes-paper-shapes"]
    assert e["runs"] == 2 and e["ensembles"] == 2 and e["steps"] == 60 and r["device"] == "cpu" and not r["cuda_graph"]
    for n in (4, 8):
        assert e["fixed_s"] + e["per_step_s"] * n == pytest.approx(e["wall_s"][str(n)], abs=0.02)
    assert e["extrapolated_s"] == pytest.approx(e["fixed_s"] + e["per_step_s"] * 60, abs=0.1)
    assert r["together"]["wall_s"] == e["wall_s"]  # one experiment: the last to end is it
    # --verify: the profile's own sweep (60 steps) trained every run; its time is reported, not compared
    assert e["measured_runs"] == 2 and e["measured_s"] == r["together"]["measured_s"] > 0
    bad = subprocess.run(
        cmd[:-2] + ["--run", "triangle-center:0", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "WORKERS must be a positive integer" in bad.stderr
    bad = subprocess.run(cmd + ["--set", "train.steps=9"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "--set train.steps is what --steps sets" in bad.stderr
    bad = subprocess.run(cmd + ["--cuda-graph"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode != 0 and "cuda_graph needs a CUDA device" in bad.stderr  # passed on to the sweeps
    assert len(out.read_text().splitlines()) == 1


def test_profile_timing_script_stops_its_sweeps_when_stopped():
    """Stopped by SIGTERM (as `timeout` does) mid-sweep, time_profile.py leaves no sweep running."""
    import signal
    import subprocess
    import sys
    import time

    def sweeps():  # processes whose command line names this test's temporary folders
        out = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if b"time-profile-7771-" in cmdline.read_bytes():
                    out.append(cmdline.parent.name)
            except OSError:
                pass
        return out

    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "time_profile.py"),
            "--profile",
            "quick",
            "--steps",
            "7771",
            "7772",
            "--device",
            "cpu",
            "--run",
            "triangle-center:1",
            "--out",
            "/dev/null",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not sweeps() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sweeps(), "the sweep never started"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    time.sleep(0.5)
    assert sweeps() == []
