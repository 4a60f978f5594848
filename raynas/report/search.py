"""The report of one search, built from its MLflow runs alone and logged to its parent run:

- ``anytime.png``: the best validation accuracy so far, against trials finished and wall time;
- ``accuracy_vs_params.png``, ``accuracy_vs_flops.png``: every trial against its cost, with the
  Pareto front (``raynas.objectives.pareto``);
- ``best_architecture.png``: the diagram of the search's best architecture;
- ``comparison.html``: the top architectures side by side, with their diagrams;
- ``report.html``: all of it in one self-contained page (images inlined as base64), because
  MLflow shows an HTML artifact in a sandboxed frame that cannot fetch other artifacts.

``search()`` logs it at the end through the search's ledger; ``raynas report RUN_ID`` builds it
again for any search, e.g. one that ran before this existed or one that was extended.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from mlflow.entities import Metric, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from raynas.errors import ConfigError
from raynas.objectives.pareto import pareto_front, pareto_plot
from raynas.report.diagram import draw
from raynas.report.graph import facts, graph_of
from raynas.space import read_space

ANYTIME_SIZE = (1200, 450)  # pixels
DPI = 100
TOP = 5  # architectures in the comparison
COSTS = ("params", "flops")


@dataclass
class Trial:
    run: Run
    history: list[Metric]  # val_accuracy, one point per report

    @property
    def trial_id(self) -> str:
        return self.run.data.tags.get("raynas.trial_id", self.run.info.run_id[:8])

    @property
    def val_accuracy(self) -> float | None:
        """The last report's, as Tune ranks trials."""
        return self.run.data.metrics.get("val_accuracy")

    @property
    def finished_ms(self) -> int:
        return self.run.info.end_time or max(m.timestamp for m in self.history)


@dataclass
class Search:
    parent: Run
    trials: list[Trial]  # those that reported val_accuracy, in the order they finished
    others: int  # trials without any val_accuracy (failed before their first report)
    model: str  # the space's builder, which names its graph function
    architectures: dict[str, dict[str, Any]]  # run id -> architecture, for the shown trials
    budget: dict[str, Any] | None = None  # budget.json: how a time budget was spent

    @property
    def best(self) -> Trial:
        """The trial the search chose (its objective may not be accuracy), else the most
        accurate."""
        chosen = self.parent.data.tags.get("raynas.best_trial_id")
        by_id = {t.trial_id: t for t in self.trials}
        return by_id.get(chosen) or self.top[0]

    @property
    def top(self) -> list[Trial]:
        return sorted(self.trials, key=lambda t: -t.val_accuracy)[:TOP]

    @property
    def shown(self) -> dict[str, Trial]:
        """The trials whose architectures the report draws, by run id."""
        return {t.run.info.run_id: t for t in (*self.top, self.best)}


def parent_run(client: MlflowClient, run_id: str) -> Run:
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"RUN_ID: no run {run_id!r} in {client.tracking_uri}") from None
    role = run.data.tags.get("raynas.role")
    if role != "search":
        raise ConfigError(f"RUN_ID: run {run_id} is not the parent run of a search (its "
                          f"raynas.role is {role!r}); raynas search prints the parent run id")
    return run


def artifact_json(client: MlflowClient, run_id: str, name: str, missing: str) -> Any:
    """The JSON artifact ``name`` of a run; ``missing`` says in the one-line error which runs
    have it."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = client.download_artifacts(run_id, name, folder)
        except (MlflowException, OSError):
            raise ConfigError(f"RUN_ID: run {run_id} has no {name} ({missing})") from None
        return json.loads(Path(path).read_text())


def architecture(client: MlflowClient, run_id: str) -> dict[str, Any]:
    return artifact_json(client, run_id, "architecture.json",
                         "a trial or final run of a raynas search has one")


def collect(client: MlflowClient, run_id: str) -> Search:
    """Everything the report shows, read from MLflow."""
    parent = parent_run(client, run_id)
    runs, token = [], None
    while True:
        page = client.search_runs(
            [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}' and "
            "tags.`raynas.role` = 'trial'", max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            break
    trials = [Trial(r, client.get_metric_history(r.info.run_id, "val_accuracy")) for r in runs]
    reported = sorted((t for t in trials if t.history and t.val_accuracy is not None),
                      key=lambda t: t.finished_ms)
    if not reported:
        raise ConfigError(f"RUN_ID: no trial of search run {run_id} has reported "
                          "val_accuracy yet")
    with tempfile.TemporaryDirectory() as folder:
        space = Path(client.download_artifacts(run_id, "space.yaml", folder)).read_text()
    search = Search(parent, reported, len(trials) - len(reported),
                    read_space(yaml.safe_load(space))[0].model, {})
    for run in search.shown:
        search.architectures[run] = architecture(client, run)
    if "raynas.plan" in parent.data.tags or parent.data.params.get("time_budget"):
        with contextlib.suppress(ConfigError):  # a search that ended before writing it
            search.budget = artifact_json(client, run_id, "budget.json", "")
    return search


def build(client: MlflowClient, run_id: str) -> dict[str, bytes]:
    """The report's files (name -> content) for search ``run_id``."""
    search = collect(client, run_id)
    files = {"anytime.png": anytime_plot(search)}
    for cost in COSTS:
        rows = [{"trial_id": t.trial_id, "val_accuracy": t.val_accuracy,
                 cost: t.run.data.metrics[cost]} for t in search.trials
                if cost in t.run.data.metrics]
        if rows:
            objectives = [("val_accuracy", "max"), (cost, "min")]
            files[f"accuracy_vs_{cost}.png"] = pareto_plot(rows, pareto_front(rows, objectives),
                                                           objectives)
    diagrams = {run: diagram(search, trial) for run, trial in search.shown.items()}
    files["best_architecture.png"] = diagrams[search.best.run.info.run_id]
    table = comparison(search, diagrams)
    files["comparison.html"] = page(f"Top architectures: {name(search)}", table).encode()
    files["report.html"] = page(f"Search report: {name(search)}",
                                summary(search, files, table)).encode()
    return files


def name(search: Search) -> str:
    return search.parent.data.tags.get("raynas.name") or search.parent.info.run_name


def diagram(search: Search, trial: Trial) -> bytes:
    arch = search.architectures[trial.run.info.run_id]
    return draw(graph_of(search.model)(arch), f"trial {trial.trial_id}: val_accuracy "
                f"{trial.val_accuracy:.4f}")


def anytime_plot(search: Search) -> bytes:
    """Best validation accuracy so far, against trials finished and against seconds since the
    search started (every report counts there, so early-stopped trials do too)."""
    fig = Figure(figsize=(ANYTIME_SIZE[0] / DPI, ANYTIME_SIZE[1] / DPI), dpi=DPI)
    by_trial, by_time = fig.subplots(1, 2)
    finals = [t.val_accuracy for t in search.trials]
    count = range(1, len(finals) + 1)
    by_trial.scatter(count, finals, s=14, c="0.6", label="trial (last report)")
    by_trial.step(count, _running_max(finals), where="post", c="C0", label="best so far")
    by_trial.set_xlabel("trials finished")
    by_trial.xaxis.set_major_locator(MaxNLocator(integer=True))
    start = search.parent.info.start_time
    points = sorted((m.timestamp, m.value) for t in search.trials for m in t.history)
    seconds = [(ms - start) / 1000 for ms, _ in points]
    by_time.scatter(seconds, [v for _, v in points], s=8, c="0.7", label="report (an epoch)")
    by_time.step(seconds, _running_max([v for _, v in points]), where="post", c="C0",
                 label="best so far")
    by_time.set_xlabel("seconds since the search started")
    by_time.set_xlim(left=0)  # the time before the first report (start-up) shows too
    for ax in (by_trial, by_time):
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle(f"{name(search)}: anytime performance")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _budget(tags: dict[str, str], spent: dict[str, Any]) -> str:
    """How a time budget was spent: the plan, the trials' and the whole search's seconds, and
    how the trials ended."""
    ends = ", ".join(f"{n} {what}" for what, n in spent["trials"].items() if n)
    plan = tags.get("raynas.plan", "no plan (--no-budget-plan)")
    return (f"{spent['budget_s']:.0f} s: trials {spent['trials_s']:.0f} s, all "
            f"{spent['total_s']:.0f} s; trials: {ends}. {plan}")


def _running_max(values: list[float]) -> list[float]:
    out: list[float] = []
    for v in values:
        out.append(max(v, out[-1]) if out else v)
    return out


# --- HTML ------------------------------------------------------------------------------------
STYLE = """body{font-family:sans-serif;margin:24px;color:#222;max-width:1450px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:left;font-size:14px}th{background:#f3f3f3}img{max-width:100%}
pre{background:#f6f6f6;padding:8px;font-size:12px}"""


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}"
            f"<p><small>raynas, {time.strftime('%Y-%m-%d %H:%M:%S')}</small></p></body></html>")


def image(png: bytes, alt: str) -> str:
    return (f"<img alt='{html.escape(alt)}' "
            f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>")


def _number(value: Any, digits: str = ",.0f") -> str:
    return format(value, digits) if isinstance(value, int | float) else "-"


def comparison(search: Search, diagrams: dict[str, bytes]) -> str:
    """A table of the top architectures, each followed by its diagram."""
    head = ("<tr><th>#</th><th>trial</th><th>val_accuracy</th><th>params</th><th>flops</th>"
            "<th>depth</th><th>ops</th><th>epochs</th><th>status</th><th>run</th></tr>")
    rows = []
    for rank, trial in enumerate(search.top, start=1):
        run_id = trial.run.info.run_id
        found = facts(graph_of(search.model)(search.architectures[run_id]))
        metrics = trial.run.data.metrics
        cells = (rank, trial.trial_id, _number(trial.val_accuracy, ".4f"),
                 _number(metrics.get("params")), _number(metrics.get("flops")), found["depth"],
                 found["ops"], len(trial.history), trial.run.info.status, run_id)
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
        rows.append(f"<tr><td colspan='10'>{image(diagrams[run_id], f'trial {trial.trial_id}')}"
                    "</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def summary(search: Search, files: dict[str, bytes], table: str) -> str:
    tags, metrics = search.parent.data.tags, search.parent.data.metrics
    statuses: dict[str, int] = {}
    for trial in search.trials:
        statuses[trial.run.info.status] = statuses.get(trial.run.info.status, 0) + 1
    facts_rows = {
        "MLflow run": search.parent.info.run_id,
        "space / strategy / scheduler": " / ".join(
            tags.get(f"raynas.{k}", "-") for k in ("space", "strategy", "scheduler")),
        "dataset": tags.get("raynas.dataset", "-"),
        "objectives": tags.get("raynas.objectives", "-"),
        "trials": ", ".join(f"{n} {s.lower()}" for s, n in sorted(statuses.items()))
        + (f", {search.others} without a result" if search.others else ""),
        **({"time budget": _budget(tags, search.budget)} if search.budget else {}),
        "best validation accuracy": _number(search.best.val_accuracy, ".4f"),
        "test accuracy (best, retrained)": _number(metrics.get("test_accuracy"), ".4f"),
    }
    info = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in facts_rows.items())
    best_arch = search.architectures[search.best.run.info.run_id]
    costs = "".join(image(files[f], f) for f in (f"accuracy_vs_{c}.png" for c in COSTS)
                    if f in files)
    return (f"<table>{info}</table>"
            f"<h2>Anytime performance</h2>{image(files['anytime.png'], 'anytime')}"
            f"<h2>Accuracy against cost (Pareto front in red)</h2>{costs}"
            f"<h2>Best architecture (trial {html.escape(search.best.trial_id)})</h2>"
            f"{image(files['best_architecture.png'], 'best architecture')}"
            f"<pre>{html.escape(json.dumps(best_arch, indent=1))}</pre>"
            f"<h2>Top {len(search.top)} architectures</h2>{table}")


# --- where it goes ---------------------------------------------------------------------------
def attach(record: Any, progress: Callable[[str], None]) -> None:
    """Log the report to the parent run of ``record`` (a ``SearchRecord``) through its ledger.
    It never fails the search: without it, the search's results are all still in MLflow."""
    hint = f"raynas report {record.run_id}"
    if record.ledger.pending:
        progress(f"warning: no search report while MLflow lags behind; later: {hint}")
        return
    started = time.perf_counter()
    try:
        files = build(record.ledger.client, record.run_id)
    except Exception as exc:  # noqa: BLE001 - a missing report must not fail a search
        progress(f"warning: no search report ({type(exc).__name__}: {exc}); retry: {hint}")
        return
    for file, content in files.items():
        record.log_file("parent", f"report/{file}", content)
    progress(f"report.html and {len(files) - 1} more in the search's run "
             f"({time.perf_counter() - started:.1f} s)")


def log_report(client: MlflowClient, run_id: str) -> list[str]:
    """Build the report of search ``run_id`` and log it to that run (``raynas report``)."""
    files = build(client, run_id)
    with tempfile.TemporaryDirectory() as folder:
        for file, content in files.items():
            (Path(folder) / file).write_bytes(content)
            client.log_artifact(run_id, str(Path(folder) / file))
    return list(files)
