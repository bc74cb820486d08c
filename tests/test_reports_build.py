"""The built report: files, figures, a self-contained HTML page, unfinished runs, the CLI, a browser."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fake_run import make_fake_run, noisy_probs
from reports_support import full_fake_run

from benchmark.cli import main as zoobench
from benchmark.errors import ZoobenchError
from benchmark.store import RunStore
from reports import build_report, leaderboard

FIGURES = ("samples", "confusion_best_member", "confusion_best_ensemble", "confusion_top_members",
           "per_class", "curves", "cost", "reliability", "mistakes", "diversity")  # fmt: skip
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[RunStore, Path]:
    store = full_fake_run(tmp_path_factory.mktemp("run") / "finished")
    return store, build_report(store)


def test_build_report_writes_leaderboard_markdown_html_and_every_figure(built):
    store, index = built
    assert index == store.root / "report" / "index.html" and index.is_file()
    assert store.leaderboard_csv.is_file()
    for name in FIGURES:
        png = store.report_dir / "figures" / f"{name}.png"
        assert png.read_bytes().startswith(PNG), name
    readme = (store.report_dir / "README.md").read_text()
    for name in FIGURES:
        assert f"](figures/{name}.png)" in readme
    assert "Skipped" not in readme
    assert "| average of 3 " in readme and "broken" in readme and "loss became NaN" in readme
    assert "McNemar" in readme and "Best ensemble vs best single member" in readme
    assert "the run finished 2026-01-01T00:03:00Z; 5 of 6 leaderboard rows done" in readme
    assert "synthetic probabilities" in readme and "1,000 / 300 / 400" in readme
    assert not list(store.report_dir.rglob("*.tmp"))  # atomic writes leave no temp files


def test_html_is_self_contained_and_every_image_is_a_png_data_uri(built):
    _, index = built
    page = index.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "@import" not in page and "url(" not in page
    sources = re.findall(r"<img[^>]*\ssrc=\"([^\"]*)\"", page)
    assert len(sources) == len(FIGURES)
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw.startswith(PNG)
        import cv2

        image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and min(image.shape[:2]) > 100
    assert page.count('<tr class="status-') == 6  # five done rows and the failed one
    best_val = leaderboard(built[0])["val_accuracy"].iloc[0]
    assert f'data-value="{best_val}"' in page  # raw values sort; the text shows percentages
    assert f"{100 * best_val:.2f}%" in page


def test_report_of_an_unfinished_run_shows_what_is_done(tmp_path):
    store = make_fake_run(tmp_path / "running", accuracies=(0.8, 0.7), failed=False)
    # A member still training: config.json only; another with probabilities but no metrics yet.
    store.member_dir("member50").mkdir()
    (store.member_dir("member50") / "config.json").write_text(json.dumps({"name": "training|net"}))
    (store.member_dir("member01") / "history.csv").write_text("")  # cut short by a kill
    half = store.member_dir("member51")
    half.mkdir()
    (half / "config.json").write_text(json.dumps({"name": "scoring-net", "kind": "pretrained"}))
    np.save(
        half / "val_probs.npy", noisy_probs(store.labels("val"), 0.9, 10, np.random.default_rng(0))
    )
    (store.data_dir / "x_test.npy").unlink()  # e.g. the runner had not written it yet
    index = build_report(store)
    board = leaderboard(store)
    assert list(board["status"]) == ["done", "done", "unfinished", "unfinished"]
    assert "training\\|net" in (store.report_dir / "README.md").read_text()  # the table holds
    assert (store.report_dir / "figures" / "curves.png").is_file()  # member00's curves still drawn
    readme = (store.report_dir / "README.md").read_text()
    assert "run.json records no finish yet" in readme
    assert "Skipped: no ensemble has test predictions yet" in readme
    assert "Skipped: ensembles/diversity.json is missing" in readme
    assert "Skipped: data/x_test.npy is missing" in readme
    assert (store.report_dir / "figures" / "confusion_best_member.png").is_file()
    assert not (store.report_dir / "figures" / "diversity.png").exists()
    assert "Skipped" in index.read_text()


def test_report_of_a_run_with_no_members_yet(tmp_path):
    store = make_fake_run(tmp_path / "new", accuracies=(), failed=False)
    build_report(store)
    readme = (store.report_dir / "README.md").read_text()
    assert "No members or ensembles stored yet" in readme
    assert readme.count("Skipped:") == len(FIGURES) - 1  # only the sample grid can be drawn


def test_unknown_or_empty_run_folder_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(ZoobenchError, match="does not exist"):
        build_report(RunStore(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZoobenchError, match="not a zoobench run"):
        build_report(RunStore(tmp_path / "empty"))
    assert zoobench(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoobench: error:") and "\n" not in err


def test_cli_report_rebuilds_from_the_store(tmp_path, capsys):
    store = make_fake_run(tmp_path / "cli", accuracies=(0.8, 0.6), failed=True)
    assert zoobench(["report", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "net0" in out and "index.html" in out
    assert (store.report_dir / "index.html").is_file() and store.leaderboard_csv.is_file()


def test_report_reads_what_the_ensembles_package_stores(tmp_path):
    ensembles = pytest.importorskip("ensembles")
    store = make_fake_run(tmp_path / "ens")
    built = ensembles.build_ensembles(store, {"methods": ["average-all", "greedy"]}, 0)
    assert built and (store.ensembles_dir / "best").is_dir()  # a pointer folder, not a row
    build_report(store)
    board = leaderboard(store)
    rows = board[board["kind"] == "ensemble"]
    assert sorted(rows["method"]) == ["average", "greedy"] and set(rows["status"]) == {"done"}
    assert not board["id"].str.endswith("/best").any()
    assert rows["test_accuracy"].notna().all() and rows["params"].notna().all()
    readme = (store.report_dir / "README.md").read_text()
    assert "Skipped" not in readme and "Best ensemble vs best single member" in readme


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _dump_dom(browser: str, page: Path, profile: Path) -> tuple[str, str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=5000", "--dump-dom"]  # fmt: skip
    done = subprocess.run(
        [browser, *flags, page.as_uri()], capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def test_chromium_renders_the_leaderboard_and_every_figure(built, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip(
            "no chromium / chromium-browser / google-chrome on PATH (apt-get install chromium)"
        )
    store, index = built
    # Click the "Val acc." header once (descending) with the page's own sorting code, in a copy.
    probe = tmp_path / "probe.html"
    probe.write_text(index.read_text().replace("</body>", """<script>
window.addEventListener("load", function () {
  var th = Array.prototype.find.call(document.querySelectorAll("#leaderboard th"),
                                     function (h) { return h.textContent === "Val acc."; });
  th.click();
  var names = Array.prototype.map.call(document.querySelectorAll("#leaderboard tbody tr"),
                                       function (r) { return r.cells[1].textContent; });
  document.documentElement.setAttribute("data-sorted", names.join("|"));
});
</script></body>"""))  # fmt: skip
    dom, log = _dump_dom(browser, probe, tmp_path / "profile")
    assert 'data-report-check="ok"' in dom, re.findall(r'data-report-check="[^"]*"', dom)
    assert f'data-images="{len(FIGURES)}"' in dom and 'data-rows="6"' in dom
    console = [line for line in log.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "error" in line.lower() or "uncaught" in line.lower()]
    # The self-check can fail: a copy with an undecodable image is reported broken.
    bad = tmp_path / "bad.html"
    bad.write_text(
        index.read_text().replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1)
    )
    bad_dom, _ = _dump_dom(browser, bad, tmp_path / "profile2")
    assert 'data-report-check="broken: Sample images' in bad_dom
    board = leaderboard(store)
    expected = board.sort_values("val_accuracy", ascending=False, na_position="last")["model"]
    assert re.search(r'data-sorted="([^"]*)"', dom).group(1) == "|".join(expected)
