"""What a person sees: `mlflow server` on the session's real search, opened in headless Chromium
(Debian's package, driven by Playwright; `playwright install` is never run: it downloads).

Screenshots go to $RAYNAS_SCREENSHOTS when set (the README's come from
`RAYNAS_SCREENSHOTS=docs python -m pytest tests/cli/test_browse.py`), else to the test's temp dir.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from servers import start_mlflow, stop

from raynas.report import diagram, search

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
# The UI's own settings, so that its assistant panel does not cover the screenshots.
UI_SETTINGS = {"mlflow.assistant.panelOpen_v1": "false",
               "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true"}
WAIT_MS = 60_000  # for one page element: seconds usually, more on a loaded machine


@pytest.fixture
def mlflow_ui(tiny_search, tmp_path) -> Iterator[str]:
    """`mlflow server` on the search's store; 127.0.0.1, since MLflow 3's server rejects Host
    headers outside localhost and private addresses (see its --allowed-hosts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start_mlflow(port, tiny_search.tracking_uri, tmp_path / "server.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(server)


def test_the_mlflow_ui_shows_the_runs_a_metric_chart_the_diagram_and_the_report(
        tiny_search, mlflow_ui, tmp_path):
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y "
                    "chromium), as .ci/run does")
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("RAYNAS_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tiny_search.tracking_uri)
    found = search.collect(client, tiny_search.parent_run_id)
    experiment = found.parent.info.experiment_id
    best = found.best.run
    runs = f"{mlflow_ui}/#/experiments/{experiment}/runs"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 760})
        context.set_default_timeout(WAIT_MS)
        context.add_init_script(f"for (const [k, v] of Object.entries({json.dumps(UI_SETTINGS)}))"
                                " localStorage.setItem(k, v);")
        page = context.new_page()

        # the runs list: the search's run, unfolded into its trials
        page.goto(runs)
        page.get_by_text(found.parent.info.run_name).first.wait_for()
        page.locator("button[data-component-id*='runnamecellrenderer']").first.click()
        for trial in found.trials:
            page.get_by_text(trial.run.info.run_name).first.wait_for()
        page.screenshot(path=shots / "mlflow-runs.png")

        # the best trial's val_accuracy chart (Plotly), found with the page's own search box:
        # one point per epoch
        page.goto(f"{runs}/{best.info.run_id}/model-metrics")
        page.get_by_placeholder("Search metric charts").fill("val_accuracy")
        chart = page.locator("[data-testid=experiment-view-compare-runs-card]",
                             has_text="val_accuracy")
        chart.locator(".js-plotly-plot").wait_for()
        assert chart.locator(".scatterlayer .point").count() == len(found.best.history)
        page.screenshot(path=shots / "mlflow-metrics.png")

        # the trial's diagram, as an image of its full size
        page.goto(f"{runs}/{best.info.run_id}/artifacts/architecture.png")
        page.locator("img[src^='blob:']").first.wait_for()
        sizes = page.eval_on_selector_all(
            "img[src^='blob:']", "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
        assert list(diagram.SIZE) in sizes
        page.screenshot(path=shots / "mlflow-artifacts.png")

        # the search's report.html, in MLflow's HTML frame, every image decoded
        page.goto(f"{runs}/{found.parent.info.run_id}/artifacts/report.html")
        frame = page.frame_locator("iframe").first
        frame.get_by_text("Anytime performance").wait_for()
        shown = frame.locator("img").evaluate_all(
            "imgs => imgs.map(i => [i.alt, i.naturalWidth, i.naturalHeight])")
        page.screenshot(path=shots / "mlflow-report.png")
        browser.close()

    assert ["anytime", *search.ANYTIME_SIZE] in shown
    assert ["best architecture", *diagram.SIZE] in shown
    assert len(shown) == 4 + len(found.top) and all(w > 0 and h > 0 for _, w, h in shown)
    for name in ("mlflow-runs", "mlflow-metrics", "mlflow-artifacts", "mlflow-report"):
        assert (shots / f"{name}.png").stat().st_size > 10_000
