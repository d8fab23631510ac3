"""The HTML report, read as a reader would: opened in headless Chromium, every figure loads.

The experiments here run on a small synthetic data set (no MNIST needed). Chromium is
Debian's ``chromium`` (``.ci/run`` installs it); without it the rendering tests are skipped
locally and fail in CI (``CI`` set), where they must run.
"""

import base64
import csv
import os
import re
import shutil
import subprocess

import matplotlib.image
import pytest
from _helpers import tiny_dataset

from segdend.errors import SegdendError
from segdend.experiments import get_experiment, reproduce
from segdend.report import SUMMARY_COLUMNS, build_report, write_report

TINY = ["model.n_inputs=16"]


@pytest.fixture(scope="module")
def results_root(tmp_path_factory):
    """Two shortened experiments and a loose results/ folder with its own summary.csv."""
    root = tmp_path_factory.mktemp("report")
    data = tiny_dataset(60, 12)
    for exp_id in ("sparse", "loss_corr"):
        reproduce(get_experiment(exp_id), out=root / exp_id, epochs=1, mode="rate",
                  overrides=TINY, data=data)
    other = root / "results" / "sweep"
    other.mkdir(parents=True)
    (other / "summary.csv").write_text("eta,test_error\n0.1,5.0\n0.2,4.5\n")
    shutil.copy(root / "sparse" / "sparse.png", other / "curve.png")
    return root


def test_report_page_holds_every_experiment_and_figure(results_root):
    page, summary = write_report(results_root)
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>")
    for exp_id in ("sparse", "loss_corr"):
        assert f'id="exp-{exp_id}"' in text
    assert "shortened: 1 of 60 epochs" in text and "shortened: 1 of 2 epochs" in text
    assert "model.feedback_sparsity=0.8" in text  # what was run
    assert "3.7" in text and "0.61" in text  # published values beside the results
    assert "results/sweep/summary.csv" in text  # the loose results
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 3
    for data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG")
    assert "src=\"http" not in text and "<link" not in text  # self-contained


def test_summary_csv_has_one_row_per_condition(results_root):
    _, summary = write_report(results_root)
    rows = list(csv.DictReader(open(summary)))
    assert list(rows[0])[:len(SUMMARY_COLUMNS)] == SUMMARY_COLUMNS
    assert [(r["experiment"], r["condition"]) for r in rows] == [
        ("loss_corr", "h1"), ("sparse", "regular"), ("sparse", "sparse")]
    by = {r["condition"]: r for r in rows}
    assert by["regular"]["published"] == "4.1" and by["sparse"]["published"] == "3.7"
    assert by["h1"]["published"] == "0.61" and by["h1"]["measure"] == "loss_corr_r"
    for r in rows:
        assert r["seeds"] == "1" and r["epochs"] == "1"
        assert 0 <= float(r["test_error_mean"]) <= 100 and r["test_error_sd"] == "0.0"


def test_report_of_an_empty_folder_says_what_to_do(tmp_path):
    with pytest.raises(SegdendError, match="segdend reproduce"):
        build_report(tmp_path)


def test_report_command(results_root, tmp_path):
    from typer.testing import CliRunner

    import segdend.cli.experiments_cmd  # noqa: F401
    from segdend.cli.app import app

    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", str(results_root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "wrote" in result.output


# -- in a browser ---------------------------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]

# Counts the page's images and those that decoded (complete, naturalWidth > 0) once loaded.
PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute("data-images", String(imgs.length));
  document.body.setAttribute("data-images-loaded", String(ok.length));
});
</script>"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and os.path.exists("/usr/bin/chromium"):
        path = "/usr/bin/chromium"
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI to render the report (.ci/run installs "
                        "Debian's chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium); the report is "
                    "rendered in CI")
    return path


def open_in_chromium(page, tmp_path, *extra):
    args = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000", *extra, page.as_uri()]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def probed_copy(page, path, break_first_image=False):
    text = page.read_text()
    if break_first_image:
        text = text.replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1)
    path.write_text(text.replace("</body>", PROBE + "</body>"))
    return path


def _loaded(dom):
    body = re.search(r"<body[^>]*>", dom).group(0)
    total = int(re.search(r'data-images="(\d+)"', body).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', body).group(1))
    return total, loaded


def test_report_renders_in_chromium_with_every_figure_loaded(results_root, tmp_path):
    page, _ = write_report(results_root)
    dom = open_in_chromium(probed_copy(page, tmp_path / "probed.html"), tmp_path, "--dump-dom")
    assert "Overview" in dom and "loss_corr" in dom and "shortened" in dom
    assert _loaded(dom) == (3, 3)
    shot = tmp_path / "shot.png"
    open_in_chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1200,1600",
                     "--hide-scrollbars")
    img = matplotlib.image.imread(shot)
    assert img.shape[:2] == (1600, 1200)
    assert img.std() > 0.02, "the screenshot is blank"


def test_the_browser_check_notices_a_broken_figure(results_root, tmp_path):
    page, _ = write_report(results_root)
    broken = probed_copy(page, tmp_path / "broken.html", break_first_image=True)
    total, loaded = _loaded(open_in_chromium(broken, tmp_path, "--dump-dom"))
    assert total == 3 and loaded == 2
