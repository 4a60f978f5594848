"""``raynas retrain``, ``export``, ``report``, ``compare`` and ``pareto``: what a search found."""

from __future__ import annotations

import argparse
from typing import Any

from raynas.cli.common import json_flag, print_result, tracking_flag


def add(commands: Any) -> None:
    rt = commands.add_parser("retrain", help="retrain a search's best architectures with several "
                                             "seeds; test, log, register, crown a champion")
    rt.set_defaults(func=cmd_retrain)
    rt.add_argument("target", metavar="RUN_ID|ARCH.json",
                    help="a search's MLflow (parent) run id, or an architecture JSON file")
    rt.add_argument("--epochs", type=int, required=True,
                    help="epochs of each training on train+val")
    rt.add_argument("--top-k", type=int, default=1,
                    help="the K best architectures of the search by validation accuracy "
                         "(default: %(default)s)")
    rt.add_argument("--seeds", type=int, default=3,
                    help="trainings per architecture, seeds SEED..SEED+S-1 (default: %(default)s)")
    rt.add_argument("--seed", type=int, default=None,
                    help="data split and first training seed (default: the search's; a file: 0)")
    rt.add_argument("--dataset", default=None,
                    help="default: the search's; for a file: digits")
    rt.add_argument("--space", default=None,
                    help="an architecture file's space (default: the one the file names)")
    rt.add_argument("--experiment", default=None,
                    help="MLflow experiment and registered model (default: the search's; for a "
                         "file: the space's name)")
    tracking_flag(rt)
    json_flag(rt)

    xp = commands.add_parser("export", help="export an MLflow model to TorchScript or ONNX, "
                                            "checked against PyTorch")
    xp.set_defaults(func=cmd_export)
    xp.add_argument("model_uri", metavar="MODEL_URI",
                    help="models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH")
    xp.add_argument("--format", required=True, choices=("torchscript", "onnx"))
    xp.add_argument("--output", default="export", metavar="DIR",
                    help="folder for model.pt / model.onnx (default: %(default)s)")
    tracking_flag(xp)

    rp = commands.add_parser("report", help="(re)build a search's report (report.html, plots, "
                                            "diagrams) from MLflow and log it to its run")
    rp.set_defaults(func=cmd_report)
    rp.add_argument("run_id", metavar="RUN_ID", help="the search's MLflow (parent) run id")
    tracking_flag(rp)
    cp = commands.add_parser("compare", help="what changed between two trials' architectures, "
                                             "and their parameters and FLOPs")
    cp.set_defaults(func=cmd_compare)
    cp.add_argument("run_ids", metavar="RUN_ID", nargs=2, help="two trial runs: A, then B")
    tracking_flag(cp)

    pa = commands.add_parser("pareto", help="print the Pareto front of a multi-objective search")
    pa.set_defaults(func=cmd_pareto)
    pa.add_argument("run_id", metavar="RUN_ID", help="the search's (parent) MLflow run")
    tracking_flag(pa)



def cmd_retrain(args: argparse.Namespace) -> None:
    from raynas.experiment.retrain import retrain_best

    result = retrain_best(args.target, args.epochs, args.top_k, args.seeds,
                          dataset=args.dataset, space=args.space, seed=args.seed,
                          tracking=args.tracking_uri, experiment=args.experiment)
    print_result(result.table(), result.to_json(), args.json)


def cmd_export(args: argparse.Namespace) -> None:
    from raynas.experiment.export import export_model

    done = export_model(args.model_uri, args.format, args.output, args.tracking_uri)
    print(f"{done.format}: {done.path}")
    print(f"checked against the PyTorch model on batches of {done.batch_sizes} (the logged "
          f"input example, then {done.inputs}): max abs diff {done.max_abs_diff:.3g} "
          f"(tolerance {done.tolerance:.3g})" + (f"; {done.matched}" if done.matched else ""))
    print(f"logged: {done.artifact} (metric export_{done.format}_max_abs_diff)")


def cmd_report(args: argparse.Namespace) -> None:
    from raynas.report.search import log_report
    from raynas.tracking.store import connect, tracking_uri

    client = connect(tracking_uri(args.tracking_uri))
    files = log_report(client, args.run_id)
    print(f"logged to run {args.run_id}: {', '.join(files)}")
    print(f"open: {client.get_run(args.run_id).info.artifact_uri}/report.html")


def cmd_compare(args: argparse.Namespace) -> None:
    from raynas.report.compare import compare
    from raynas.tracking.store import connect, tracking_uri

    print(compare(connect(tracking_uri(args.tracking_uri)), *args.run_ids))


def cmd_pareto(args: argparse.Namespace) -> None:
    from raynas.objectives.pareto import front_table
    from raynas.tracking.front import load_front

    print(front_table(load_front(args.run_id, args.tracking_uri)))
