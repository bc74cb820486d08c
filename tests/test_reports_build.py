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
from reports_support import add_fake_ensemble

from benchmark.cli.app import main as zoobench
from benchmark.errors import ZoobenchError
from benchmark.store.runstore import RunStore
from reports import build_report, leaderboard

FIGURES = (
    "samples",
    "confusion_best_member",
    "confusion_best_ensemble",
    "confusion_top_members",
    "per_class",
    "curves",
    "cost",
    "reliability",
    "mistakes",
    "diversity",
)
PNG = b"\x89PNG\r\n\x1a\n"


# What a real run's report shows: names that differ only at the end, one member stopped after one
# epoch, a failure with a long unbroken reason and the long versions line run.json records.
LONG_NAMES = {
    "net0": "efficientnet_lite0 (feature-extraction)",
    "net1": "efficientnet_lite0 (fine-tuning)",
    "net2": "efficientnet_lite0 (progressive-unfreezing)",
    "net3": "resnet20",
}
VERSIONS = dict(
    python="3.12.3",
    tensorflow="2.21.0",
    keras="3.12.0",
    numpy="2.1.3",
    pandas="2.3.3",
    matplotlib="3.10.7",
    seaborn="0.13.2",
    scipy="1.16.3",
    jax="0.7.2",
    torch="2.9.0+cpu",
    tabulate="0.9.0",
    **{"keras-tuner": "1.4.7", "scikit-learn": "1.7.2", "opencv-python-headless": "4.12.0.88"},
)
REASON = "loss became NaN at epoch 1; ResourceExhaustedError: OOM allocating shape[128,768,14,14]"


def realistic_fake_run(root: Path) -> RunStore:
    """A finished fake run (four members, a failed one, an ensemble) named like a real one."""
    store = make_fake_run(root)
    for entry in store.members():
        metrics = {k: v for k, v in entry.metrics.items() if k != "files"}
        if not entry.ok:
            metrics["reason"] = REASON
        history = entry.history()
        name = LONG_NAMES.get(entry.name, entry.name)
        probs = {split: entry.probs(split) for split in ("val", "test")} if entry.ok else {}
        store.write_entry(
            entry.path,
            config={**entry.config, "name": name},
            metrics=metrics,
            val_probs=probs.get("val"),
            test_probs=probs.get("test"),
            history=history.head(1) if name == "resnet20" else history,
        )
    add_fake_ensemble(store)
    meta = store.read_run()
    meta.update(
        {
            "budget_seconds": 1800,
            "wall_seconds": 95.5,
            "started_at": "2026-01-01T00:00:00Z",
            "finished_at": "2026-01-01T00:03:00Z",
            "versions": VERSIONS,
        }
    )
    store.write_run(meta)
    return store


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[RunStore, Path]:
    store = realistic_fake_run(tmp_path_factory.mktemp("run") / "finished")
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
    # Tables say what they hold: the settings table has a header row, comparisons name the models.
    assert re.search(r"^\| Setting +\| Value +\|$", readme, re.M)
    headers = (
        r"^\| class +\| +A: average of 3 +\| +B: efficientnet_lite0 \(feature-extraction\) +\|"
    )
    assert re.search(headers + r" +A − B +\| +support +\|$", readme, re.M)
    # The small confusion matrices share one colour bar, a smooth ramp at the figure's right.
    assert _colour_bar_levels(store.report_dir / "figures" / "confusion_top_members.png") >= 15


def _colour_bar_levels(png: Path) -> int:
    """The most grey levels on one smooth top-to-bottom ramp in the right third of a PNG: a colour
    bar has dozens, the cells of a matrix (constant colour, white lines between) a handful."""
    import cv2

    grey = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE).astype(int)
    best = 0
    for column in grey[:, grey.shape[1] * 2 // 3 :].T:
        steps = np.diff(column)
        parts = np.split(column, np.flatnonzero((steps < 0) | (steps > 4)) + 1)
        best = max(best, *(len(np.unique(part)) for part in parts))
    return best


def test_html_is_self_contained_and_every_image_is_a_png_data_uri(built):
    _, index = built
    page = index.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "@import" not in page and "url(" not in page
    images = re.findall(r'<img[^>]* width="(\d+)" height="(\d+)" src="([^"]*)"', page)
    assert len(images) == len(FIGURES)
    for width, height, src in images:
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw.startswith(PNG)
        import cv2

        image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and min(image.shape[:2]) > 100
        # Shown at the size drawn for, at half its pixels (sharp on 2x screens), within the page.
        assert abs(2 * int(width) - image.shape[1]) <= 1
        assert abs(2 * int(height) - image.shape[0]) <= 1
        assert int(width) <= 1200
    assert '<th scope="col" style="max-width:11rem">A: average of 3</th>' in page
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


def _dump_dom(
    browser: str, page: Path, profile: Path, *extra: str, dump: bool = True
) -> tuple[str, str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        *extra,
        *(["--dump-dom"] if dump else []),
    ]
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
    probe.write_text(
        index.read_text().replace(
            "</body>",
            """<script>
window.addEventListener("load", function () {
  var th = Array.prototype.find.call(document.querySelectorAll("#leaderboard th"),
                                     function (h) { return h.textContent === "Val acc."; });
  th.click();
  var names = Array.prototype.map.call(document.querySelectorAll("#leaderboard tbody tr"),
                                       function (r) { return r.cells[1].textContent; });
  document.documentElement.setAttribute("data-sorted", names.join("|"));
});
</script></body>""",
        )
    )
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


# After load: how wide the page is against the window, whether the Status column is inside the
# window, and how large each figure is shown against how many pixels it was drawn with. Then the
# leaderboard gets rows enough to scroll (three windows high) and is scrolled well into: the
# header must sit at the top of what scrolls it, the window or (narrow) the table's own box.
_LAYOUT_PROBE = """<script>
window.addEventListener("load", function () {
  var root = document.documentElement, table = document.getElementById("leaderboard");
  var cells = table.tHead.rows[0].cells, status = cells[cells.length - 1], body = table.tBodies[0];
  var shown = Array.prototype.map.call(document.images, function (img) {
    return img.naturalWidth / img.getBoundingClientRect().width; });
  root.setAttribute("data-page", root.scrollWidth + "/" + window.innerWidth);
  root.setAttribute("data-status-right", String(status.getBoundingClientRect().right));
  root.setAttribute("data-zoom", shown.map(function (r) { return r.toFixed(2); }).join(" "));
  while (table.offsetHeight < 3 * window.innerHeight) {
    body.appendChild(body.rows[0].cloneNode(true)); }
  var box = table.parentNode, boxed = getComputedStyle(box).overflowY !== "visible";
  if (boxed) { box.scrollTop = box.clientHeight; }
  else { window.scrollBy(0, table.getBoundingClientRect().top + window.innerHeight); }
  var top = boxed ? box.getBoundingClientRect().top : 0;
  root.setAttribute("data-boxed", String(boxed));
  root.setAttribute("data-head", String(status.getBoundingClientRect().top - top));
});
</script></body>"""


@pytest.mark.parametrize("width", [1400, 800])
def test_report_page_never_scrolls_sideways_and_keeps_its_header(built, tmp_path, width):
    """At 1400 px everything fits and the header sticks to the window; at 800 px the leaderboard
    scrolls inside its own box, whose top the header sticks to; the page never scrolls sideways."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium / chromium-browser / google-chrome on PATH")
    import cv2

    _, index = built
    probe = tmp_path / "layout.html"
    probe.write_text(index.read_text().replace("</body>", _LAYOUT_PROBE))
    size = f"--window-size={width},1000"
    dom, _ = _dump_dom(browser, probe, tmp_path / "profile", size)
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', re.search(r"<html[^>]*>", dom).group(0)))
    page_width, window = map(int, attrs["page"].split("/"))
    assert window == width and page_width <= window, attrs  # no sideways scroll of the page
    assert abs(float(attrs["head"])) < 1, attrs  # the header stayed at the top of its scroller
    assert attrs["boxed"] == ("false" if width == 1400 else "true"), attrs
    zoom = [float(z) for z in attrs["zoom"].split()]
    assert len(zoom) == len(FIGURES) and min(zoom) >= 1.9, zoom  # figures drawn at 2x what is shown
    if width == 1400:  # the whole leaderboard fits: the Status column shows in the window...
        assert float(attrs["status-right"]) <= width, attrs
        assert max(zoom) < 2.1, zoom  # ... and every figure is shown at the size it was drawn
    shot = tmp_path / f"report-{width}.png"
    _dump_dom(browser, index, tmp_path / "profile", size, f"--screenshot={shot}", dump=False)
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (1000, width)
