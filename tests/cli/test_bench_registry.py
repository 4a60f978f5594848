"""``raynas bench`` as a loop over ``raynas.bench.registry.BENCHMARKS``: every registered
benchmark gets a parser with its help and its flags and runs what its descriptor names; an
application's benchmark joins with one ``register(Benchmark(...))``; building the parser
imports neither torch, Ray nor MLflow. Fast: nothing here trains."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys

import pytest

from raynas.bench.registry import BENCHMARKS, Benchmark, suite
from raynas.cli import build_parser, main
from raynas.registry import load_ref


def help_of(capsys: pytest.CaptureFixture, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args([*argv, "--help"])
    assert exit.value.code == 0
    return capsys.readouterr().out


def flags_of(benchmark: Benchmark) -> list[str]:
    parser = argparse.ArgumentParser(add_help=False)
    benchmark.arguments(parser)
    return [option for action in parser._actions for option in action.option_strings]


def test_every_documented_benchmark_is_registered_and_all_runs_the_suite_in_order():
    assert {"latency", "strategies", "mo-asha", "nb201", "tabular", "detection", "overhead",
            "throughput", "asha", "scaling", "ofa", "all", "oneshot",
            "estimators", "ranking"} <= set(BENCHMARKS)
    order = ["overhead", "throughput", "asha", "scaling", "ofa"]
    assert [b.name for b in suite() if b.name in order] == order
    assert not BENCHMARKS["all"].suite


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_every_benchmark_has_a_parser_with_its_help_and_flags(name, capsys):
    benchmark = BENCHMARKS[name]
    assert benchmark.help and "\n" not in benchmark.help
    listing = " ".join(help_of(capsys, "bench").split())
    assert f"{name} {benchmark.help}" in listing
    text = help_of(capsys, "bench", name)
    assert text.startswith(f"usage: raynas bench {name} ")
    flags = flags_of(benchmark)
    assert flags and all(flag in text for flag in flags)
    args = build_parser().parse_args(["bench", name])
    assert args.bench == name and callable(args.func)


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_every_run_reference_names_a_function_of_the_parsed_flags(name):
    assert callable(load_ref(BENCHMARKS[name].run))


@pytest.mark.parametrize("name", [b.name for b in suite()])
def test_a_suite_benchmark_takes_quick_and_its_own_output(name):
    args = build_parser().parse_args(["bench", name, "--quick"])
    assert flags_of(BENCHMARKS[name]) == ["--quick", "--output"]
    assert args.quick and args.output == f"bench_{name}.json"


@pytest.mark.parametrize(("argv", "error"), [
    (["bench", "nope"], "invalid choice: 'nope'"),
    (["bench", "overhead", "--nope"], "unrecognized arguments: --nope"),
    (["bench"], "required: bench"),
])
def test_an_unknown_benchmark_or_flag_is_a_one_line_error(argv, error, capsys):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("raynas: error: ") and error in lines[0]
    if argv == ["bench", "nope"]:  # and it names every benchmark there is
        assert all(repr(known) in lines[0] for known in BENCHMARKS)


def test_a_benchmark_registered_from_elsewhere_gets_its_flags_and_exit_code(monkeypatch):
    """What an application does from its own folder: one ``register(Benchmark(...))``."""
    seen = []

    def flags(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--size", type=int, default=3)

    def run(args: argparse.Namespace) -> int | None:
        seen.append(args.size)
        return None if args.size < 10 else 3

    monkeypatch.setitem(BENCHMARKS, "toy", Benchmark("toy", "a toy benchmark", flags, run))
    assert main(["bench", "toy"]) == 0
    assert main(["bench", "toy", "--size", "5"]) == 0
    with pytest.raises(SystemExit) as exit:
        main(["bench", "toy", "--size", "12"])
    assert exit.value.code == 3 and seen == [3, 5, 12]


def test_all_runs_the_suite_in_turn_and_summarises_their_reports(monkeypatch, tmp_path,
                                                                  capsys):
    ran = []

    def fake(args: argparse.Namespace) -> None:
        """A suite benchmark's contract: its Report (JSON) at --output."""
        name = args.output.rpartition("bench_")[2].removesuffix(".json")
        ran.append((name, args.quick, args.output))
        with open(args.output, "w") as f:
            json.dump({"ratio": len(ran) / 4, "target": f"> {len(ran)}",
                       "meaning": f"ratio = {name} over its baseline"}, f)

    names = [b.name for b in suite()]
    for name in names:
        monkeypatch.setitem(BENCHMARKS, name, dataclasses.replace(BENCHMARKS[name], run=fake))
    assert main(["bench", "all", "--quick", "--output", str(tmp_path)]) == 0
    assert ran == [(n, True, str(tmp_path / f"bench_{n}.json")) for n in names]
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("== ")] == [
        *(f"== raynas bench {n} --quick" for n in names), "== summary"]
    summary = out[out.index("== summary") + 1:]
    assert [line.split()[:3] for line in summary] == [
        [n, "ratio", f"{(i + 1) / 4:.2f}"] for i, n in enumerate(names)]
    assert summary[0].endswith("(overhead over its baseline)")
    assert " ".join(help_of(capsys, "bench", "all").split()).count(", ".join(names)) == 1


def test_building_the_parser_imports_neither_torch_nor_ray_nor_mlflow():
    code = ("import sys; from raynas.cli import build_parser; build_parser(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray', 'mlflow'}))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True)
    assert found.stdout.strip() == "[]", found.stderr


@pytest.mark.parametrize(("argv", "error"), [
    (["latency", "--samples", "0"], "--samples, --batch and --threads must be >= 1"),
    (["strategies", "--strategies", "tpe,nope"], "unknown strategy 'nope'"),
    (["strategies", "--max-epochs", "0"], "--max-epochs: must be >= 1"),
    (["strategies", "--trials", "0"], "raynas bench strategies: every count must be >= 1"),
    (["tabular", "--seeds", "0"], "raynas bench tabular: every count must be >= 1"),
    (["tabular", "--strategies", "nope"], "unknown strategy 'nope'"),
    (["tabular", "--table", "t.txt"], "--table t.txt: unknown table format '.txt'"),
    (["mo-asha", "--max-epochs", "1"], "--max-epochs >= 2 (MO-ASHA's first rung is epoch 1)"),
    (["detection", "--retrain-epochs", "0"], "--retrain-epochs and --seeds must be >= 1"),
    (["oneshot", "--archs", "2"], "--archs must be >= 3"),
    (["oneshot", "--supernet", "nope"], "--supernet: unknown sampler 'nope'"),
    (["estimators", "--epochs", "3"], "--archs must be >= 3 and --epochs >= 4"),
    (["estimators", "--proxy", "nope"], "--proxy: unknown zero-cost proxy 'nope'"),
])
def test_a_benchmark_checks_its_flags_before_it_runs(argv, error, capsys):
    assert main(["bench", *argv]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("raynas: error: ") and error in lines[0]
