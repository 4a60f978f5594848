"""``raynas ofa train`` and ``raynas specialize``: Once-for-All (train one elastic supernet, then
pick a sub-network per device target without training). A command of its own rather than a
``raynas search --strategy``: training the supernet searches nothing (one trial, no searcher),
and specialising reads a finished supernet run, not a search's settings."""

from __future__ import annotations

import argparse
from typing import Any

from raynas.cli.common import Parser, fraction, json_flag, print_result, tracking_flag


def add(commands: Any) -> None:
    of = commands.add_parser("ofa", help="Once-for-All: train one elastic supernet by "
                                         "progressive shrinking (then: raynas specialize)")
    which = of.add_subparsers(dest="ofa", parser_class=Parser, required=True)
    tr = which.add_parser("train", help="train an elastic supernet (phases full, kernel, depth, "
                                        "width) as a Tune trial, recorded in MLflow")
    tr.set_defaults(func=cmd_train)
    tr.add_argument("--dataset", default="digits", help="default: %(default)s")
    tr.add_argument("--space", default="ofa_mbv3",
                    help="a space of a model with an elastic supernet: ofa (e.g. ofa_mbv3) or "
                         "transformer (e.g. transformer_elastic) (default: %(default)s)")
    tr.add_argument("--epochs-per-phase", type=int, default=3, help="default: %(default)s")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--experiment", default=None, help="MLflow experiment (default: the space's "
                                                        "name)")
    tr.add_argument("--storage", default=None, help="folder for Tune's files and the ledger "
                                                    "(default: $RAYNAS_STORAGE or ~/ray_results)")
    tr.add_argument("--cpus", type=fraction, default=1.0, help="CPUs of the training trial")
    tr.add_argument("--gpus", type=fraction, default=0.0, help="GPUs of the training trial")
    tr.add_argument("--address", default=None, help="existing Ray cluster (ray://… or auto)")
    tracking_flag(tr)
    json_flag(tr)

    sp = commands.add_parser("specialize", help="pick a supernet's best sub-network under "
                                                "cost constraints; test, log and register it")
    sp.set_defaults(func=cmd_specialize)
    sp.add_argument("run_id", metavar="RUN", help="the MLflow run of raynas ofa train")
    sp.add_argument("--constraint", action="append", required=True, metavar="METRIC<=BOUND",
                    help="latency_ms, flops, params or peak_memory_mb (repeatable: one target)")
    sp.add_argument("--samples", type=int, default=100,
                    help="sub-networks whose inherited accuracy trains the predictor (kept on "
                         "the run for later targets; default: %(default)s)")
    sp.add_argument("--evaluations", type=int, default=300,
                    help="evolution's proposals (default: %(default)s)")
    sp.add_argument("--population", type=int, default=20, help="default: %(default)s")
    sp.add_argument("--latency-batch", type=int, default=1, help="default: %(default)s")
    sp.add_argument("--name", default=None,
                    help="registered model (default: EXPERIMENT-TARGET, e.g. "
                         "ofa_mbv3-latency_ms-le-2)")
    sp.add_argument("--seed", type=int, default=0)
    tracking_flag(sp)
    json_flag(sp)


def cmd_train(args: argparse.Namespace) -> None:
    from raynas.ofa.specialize import train_elastic_supernet

    done = train_elastic_supernet(args.dataset, args.epochs_per_phase, space=args.space,
                                  seed=args.seed, experiment=args.experiment,
                                  tracking=args.tracking_uri, storage=args.storage,
                                  cpus=args.cpus, gpus=args.gpus, address=args.address)
    lines = [f"supernet run {done.run_id} (experiment {done.experiment}): {done.epochs} epochs "
             f"in {done.seconds:.0f} s; val_accuracy largest {done.val_accuracy:.4f}, smallest "
             f"{done.val_accuracy_smallest:.4f} (inherited weights)",
             f"next: raynas specialize {done.run_id} --constraint latency_ms<=X"]
    if done.pending:
        lines.append(f"MLflow is unreachable: {done.pending} writes wait; run raynas sync "
                     f"{done.folder}")
    print_result("\n".join(lines), done.__dict__, args.json)


def cmd_specialize(args: argparse.Namespace) -> None:
    from raynas.ofa.specialize import specialize

    done = specialize(args.run_id, args.constraint, tracking=args.tracking_uri,
                      samples=args.samples, evaluations=args.evaluations,
                      population=args.population, name=args.name,
                      latency_batch=args.latency_batch, seed=args.seed)
    costs = ", ".join(f"{k} {done.costs[k]:.4g}" for k in
                      ("latency_lut_ms", "latency_ms", "params", "flops", "peak_memory_mb")
                      if k in done.costs)
    print_result(f"target {done.target}: {done.model_uri} (run {done.run_id})\n"
                 f"test_accuracy {done.test_accuracy:.4f} (val {done.val_accuracy:.4f}, "
                 f"predicted {done.predicted_accuracy:.4f}; predictor RMSE "
                 f"{done.predictor_rmse:.4f} on held-out samples); {costs}\n"
                 f"export: raynas export {done.model_uri} --format onnx",
                 done.to_json(), args.json)
