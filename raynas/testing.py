"""A contract suite for strategies, in the spirit of scikit-learn's ``check_estimator``: what
every registered strategy must do for raynas and Ray Tune to run it. A third party that
``register``s a strategy runs ``check_strategy("name")`` in its own tests; one that registers a
model builder runs ``check_builder("name")`` (see there).

The checks drive the strategy's searcher chain the way Tune does (``suggest`` /
``on_trial_complete``), without a cluster: proposals decode into valid architectures, NaN and
infinite results and failed trials are taken, the chain pickles (Tune keeps it in the
experiment state), and a chain saved with a trial still running and restored into a fresh one
proposes what the uninterrupted chain proposes. Needs a running Ray only for strategies that
score candidates in Ray tasks (``zero_cost``).
"""

from __future__ import annotations

import contextlib
import math
import random
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from ray import cloudpickle
from ray.tune.search import Searcher, SearchGenerator

from raynas import strategies
from raynas.config import TIME_ATTR, SearchConfig
from raynas.data import load_dataset
from raynas.errors import RaynasError
from raynas.estimation import load_space
from raynas.estimation.problem import Problem
from raynas.estimation.task import TASKS
from raynas.models import (
    BUILDERS,
    ModelBuilder,
    SpaceFlag,
    build_model,
    describe,
    from_genotype,
    latency_units,
)
from raynas.models.supernet import MixedEdges, Supernet
from raynas.objectives.measure import count_params
from raynas.ops.blocks import Unit
from raynas.registry import load_ref
from raynas.report.graph import Graph, facts, graph_of
from raynas.space import Arch, Space, arch_hash
from raynas.strategies.base import Plan, StrategyContext

SPACE = "small_cnn"


class ContractError(RaynasError):
    """A strategy breaks the contract: the message names the strategy and the check."""


def check_strategy(name: str, space: str | Space = SPACE, trials: int = 10,
                   options: Mapping[str, Any] | None = None) -> None:
    """Run every check on strategy ``name`` (single-objective, and multi-objective if the
    strategy says it is) with its ``options`` (``--strategy-option`` KEY=VALUE pairs; unset:
    its defaults); raises ``ContractError`` naming the first broken one."""
    strategy = strategies.get(name)
    parsed = strategy.parse_options(options)
    space = load_space(space)
    data = load_dataset("digits") if strategy.needs_dataset else None
    objectives = [[("val_accuracy", "max")]]
    if strategy.multi_objective:
        objectives.append([("val_accuracy", "max"), ("params", "min")])
    for objective in objectives:
        def build(objective: list[tuple[str, str]] = objective) -> Plan:
            return strategy.build(StrategyContext.of(
                space, objective, seed=0, num_trials=trials, concurrency=2, max_budget=4,
                data=data, options=parsed))

        where = f"strategy {name!r} ({len(objective)} objective{'s' * (len(objective) > 1)})"
        _check_plan(build(), where)
        _check_pickles(build(), where)
        if _drivable(build()):
            _check_drive(build(), space, objective, trials, where)
            _check_restore(build, objective, where)
            _check_evaluated_points(build(), space, objective, trials, where)


def _check_plan(plan: Plan, where: str) -> None:
    if not isinstance(plan, Plan) or plan.num_trials < 1 or plan.searcher is None:
        raise ContractError(f"{where}: build(ctx) must return a Plan with a searcher and at "
                            f"least one trial, got {plan!r}")


def _check_pickles(plan: Plan, where: str) -> None:
    """Tune pickles the searcher (and a scheduler the strategy brings) into its state, with
    Ray's cloudpickle."""
    for part in (plan.searcher, plan.scheduler):
        try:
            cloudpickle.loads(cloudpickle.dumps(part))
        except Exception as exc:  # noqa: BLE001 - any failure breaks the contract
            raise ContractError(f"{where}: {type(part).__name__} does not pickle, so Tune "
                                f"cannot save the search ({type(exc).__name__}: {exc})") from None


def _drivable(plan: Plan) -> bool:
    """A ``Searcher`` chain; Tune's own variant generator (grid, zero_cost's top-k, DARTS's
    sweep) is driven by Tune and checked there."""
    return isinstance(plan.searcher, Searcher)


def _result(objective: list[tuple[str, str]], i: int) -> dict[str, Any]:
    """Results as Tune delivers them, the odd ones included: NaN, infinities."""
    odd = {3: math.nan, 4: math.inf, 5: -math.inf}
    value = odd.get(i, 0.5 + 0.01 * i)
    return {TIME_ATTR: 1, **{m: value if m == "val_accuracy" else 1000 + i for m, _ in
                             objective}}


def _check_drive(plan: Plan, space: Space, objective: list[tuple[str, str]], trials: int,
                 where: str) -> None:
    searcher = plan.searcher
    for i in range(trials):
        config = searcher.suggest(f"t{i}")
        if config is None or config == Searcher.FINISHED:
            break
        if plan.estimator is None:
            try:
                space.validate(space.decode(config))
            except RaynasError as exc:
                raise ContractError(f"{where}: proposal {i} is not an architecture of "
                                    f"{space.name!r}: {exc}") from None
        kind = {2: "a failed trial", 3: "NaN", 4: "inf", 5: "-inf"}.get(i, "a result")
        try:
            searcher.on_trial_complete(f"t{i}", result=None if i == 2 else _result(
                objective, i), error=i == 2)
        except Exception as exc:  # noqa: BLE001
            raise ContractError(f"{where}: on_trial_complete with {kind} raised "
                                f"{type(exc).__name__}: {exc}") from None


def _check_evaluated_points(plan: Plan, space: Space, objective: list[tuple[str, str]],
                            trials: int, where: str) -> None:
    """Earlier results, as Tune gives them for ``points_to_evaluate`` with
    ``evaluated_rewards``: a success, a failure and a NaN are taken, and an architecture given
    with a result is never proposed as a new trial."""
    searcher, rng = plan.searcher, random.Random(1)
    given = [space.sample(rng) for _ in range(3)]
    for i, (arch, value) in enumerate(zip(given, (0.9, 0.0, math.nan), strict=True)):
        kind = ("a result", "a failed trial", "NaN")[i]
        values = value if len(objective) == 1 else [value, 1000.0]
        try:
            searcher.add_evaluated_point(space.encode(arch), values, error=i == 1)
        except Exception as exc:  # noqa: BLE001
            raise ContractError(f"{where}: add_evaluated_point with {kind} raised "
                                f"{type(exc).__name__}: {exc}") from None
    for i in range(trials):
        config = searcher.suggest(f"e{i}")
        if config is None or config == Searcher.FINISHED:
            break
        if plan.estimator is None and arch_hash(space.decode(config)) == arch_hash(given[0]):
            raise ContractError(f"{where}: proposed again, as a new trial, an architecture "
                                "that add_evaluated_point gave with its result")
        searcher.on_trial_complete(f"e{i}", _result(objective, i + 6))


def _check_restore(build: Any, objective: list[tuple[str, str]], where: str) -> None:
    """Saved with a trial still running, restored into a fresh chain: the same next
    proposals as the chain that was never interrupted."""
    def steps(searcher: Any, start: int, stop: int) -> list[Any]:
        out = []
        for i in range(start, stop):
            out.append(searcher.suggest(f"t{i}"))
            searcher.on_trial_complete(f"t{i}", _result(objective, i))
        return out

    whole, first = build().searcher, build().searcher
    steps(whole, 0, 4)
    steps(first, 0, 4)
    running = [whole.suggest("t4"), first.suggest("t4")]
    with tempfile.TemporaryDirectory() as folder:
        SearchGenerator(first).save_to_dir(folder, "s")
        restored = SearchGenerator(build().searcher)
        restored.restore_from_dir(folder)
    if running[0] != running[1]:
        raise ContractError(f"{where}: the same seed gave different proposals")
    for chain in (whole, restored.searcher):
        chain.on_trial_complete("t4", _result(objective, 4))
    expected, got = steps(whole, 5, 8), steps(restored.searcher, 5, 8)
    if expected != got:
        raise ContractError(f"{where}: a restored search proposes other architectures than "
                            "the uninterrupted one (its state is not all saved)")


CLASSES = 3  # the networks check_builder builds (a detector's count includes the background)
BATCH = 2  # inputs per forward pass (BatchNorm needs two in training mode)


def _check_space_flag(flag: SpaceFlag) -> None:
    """A builder's flag is a long option of its own: no other builder's, and not one of
    ``raynas search``'s settings (each of which is a flag of its name, ``SearchConfig.flat``)."""
    _expect(flag.flag.startswith("--") and flag.field.isidentifier(),
            f"{flag.flag} must be --NAME and {flag.field!r} a field name")
    owners = [b.name for b in BUILDERS.values() for f in b.flags if f.flag == flag.flag]
    _expect(len(owners) == 1, f"{flag.flag} is the flag of builders {', '.join(owners)}")
    _expect(flag.flag[2:].replace("-", "_") not in SearchConfig().flat(),
            f"{flag.flag} is a setting of raynas search itself")


def check_builder(name: str, samples: int = 3, seed: int = 0) -> None:
    """The contract of model builder ``name``, as timm's tests run over ``list_models()``: from
    its ``example`` (a built-in space and an input shape) it builds ``samples`` sampled
    architectures, whose networks must return what the builder's task needs (``check_output``,
    or the task's ``Problem``: logits (N, K) of a classifier, (N, K, *input's spatial dims)
    per element, that the problem's loss trains and scores); then it exercises every capability
    the builder declares (width, genotype, latency units, mixed edges, graph). Raises
    AssertionError naming the builder and the check that failed."""
    builder = BUILDERS.get(name)
    if builder is None:
        raise AssertionError(f"model builder {name!r}: not registered; known: "
                             f"{', '.join(BUILDERS)}")
    example, shape = builder.example
    where = f"model builder {name!r} (example {example}, inputs {shape})"
    with _failing(where, "loading its example space"):
        space = load_space(example)
        _expect(space.model == name, f"the space's model is {space.model!r}")
    check = _output_check(builder, where)
    rng = random.Random(seed)
    archs = [space.sample(rng) for _ in range(samples)]
    for i, arch in enumerate(archs):
        with _failing(where, f"sampled architecture {i}: build and run"):
            check(build_model(space, arch, shape, CLASSES), shape, CLASSES)
    arch = archs[0]
    if builder.width:
        with _failing(where, "width: a network at width 0.5"):
            narrow = build_model(space, arch, shape, CLASSES, width=0.5)
            full, small = count_params(build_model(space, arch, shape, CLASSES)), \
                count_params(narrow)
            _expect(small < full, f"{small} parameters, not fewer than at width 1 ({full})")
            check(narrow, shape, CLASSES)
    if builder.genotype:
        for i, one in enumerate(archs):
            with _failing(where, f"genotype: describe, then parse, sampled architecture {i}"):
                _check_genotype(space, one)
    if builder.latency_units:
        with _failing(where, "latency_units"):
            _check_latency_units(space, arch, shape)
    if builder.mixed_edges is not None:
        with _failing(where, "mixed_edges: a supernet"):
            _check_supernet(builder, shape, check, seed)
    if builder.graph is not None:
        for i, one in enumerate(archs):
            with _failing(where, f"graph of sampled architecture {i}"):
                _check_graph(graph_of(name)(one))
    for flag in builder.flags:
        with _failing(where, f"flags: {flag.flag}"):
            _check_space_flag(flag)


@contextlib.contextmanager
def _failing(where: str, what: str) -> Iterator[None]:
    """Any exception in the block is an AssertionError naming the builder and the check."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - whatever breaks, the contract is broken
        kind = "" if isinstance(exc, AssertionError) else f"{type(exc).__name__}: "
        raise AssertionError(f"{where}: {what}: {kind}{exc}") from exc


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _output_check(builder: ModelBuilder, where: str) -> Any:
    """``(network, input_shape, num_classes) -> None``: the builder's ``check_output``, or its
    task's ``Problem``'s logits check."""
    if builder.check_output is not None:
        return load_ref(builder.check_output)
    task = TASKS.get(builder.task)
    _expect(task is not None, f"{where}: task {builder.task!r} is not registered")
    problem = task.load("problem")
    _expect(problem is not None, f"{where}: task {builder.task!r} has no Problem, so the "
            "builder must declare check_output (what its networks return)")

    def check(model: torch.nn.Module, input_shape: tuple[int, ...], num_classes: int) -> None:
        _check_logits(problem, builder.task == "classification", model, input_shape,
                      num_classes)

    return check


def _check_logits(problem: Problem, classifies: bool, model: torch.nn.Module,
                  input_shape: tuple[int, ...], num_classes: int) -> None:
    """Logits per input (a classifier's (N, K)) or per input element (N, K, *spatial); the
    problem's loss on labels of that shape is a finite scalar whose gradient reaches the
    weights, and its scores hold an ``accuracy`` in [0, 1]."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, *input_shape, generator=generator)
    model.train()
    out = model(x)
    expected = [(BATCH, num_classes)] + ([] if classifies else
                                         [(BATCH, num_classes, *input_shape[1:])])
    _expect(isinstance(out, torch.Tensor) and tuple(out.shape) in expected,
            f"expected logits shaped {' or '.join(map(str, expected))}, got "
            f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    y = torch.randint(0, num_classes, (BATCH, *out.shape[2:]), generator=generator)
    loss = problem.loss()(out, y)
    _expect(loss.dim() == 0 and bool(torch.isfinite(loss)),
            f"the {problem.name} loss is not a finite scalar: {loss}")
    loss.backward()
    _expect(any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()),
            f"the {problem.name} loss gives no weight a gradient")
    accuracy = problem.evaluate(model, x, y, num_classes)["accuracy"]
    _expect(0 <= accuracy <= 1, f"the {problem.name} scores' accuracy {accuracy} is not in "
            "[0, 1]")


def _check_genotype(space: Space, arch: Arch) -> None:
    text = describe(space, arch)
    _expect(isinstance(text, str) and bool(text), f"describe gave {text!r}")
    parsed = from_genotype(space, text)
    _expect(parsed == arch, f"{text!r} parses to another architecture: {parsed} != {arch}")
    _expect(describe(space, parsed) == text, "describing the parsed architecture changes it")


def _check_latency_units(space: Space, arch: Arch, shape: tuple[int, ...]) -> None:
    """Each unit builds and runs on its input shape, and the units (each ``count`` times)
    hold exactly the network's parameters: together they are the network."""
    units = latency_units(space, arch, shape, CLASSES)
    _expect(bool(units) and all(isinstance(u, Unit) and u.count >= 1 for u in units),
            f"expected a list of Unit (count >= 1), got {units!r}")
    total = 0
    for unit in units:
        module = unit.make().eval()
        with torch.no_grad():
            module(torch.randn(1, *unit.input_shape))
        total += count_params(module) * unit.count
    network = count_params(build_model(space, arch, shape, CLASSES))
    _expect(total == network, f"the units hold {total} parameters, the network {network}")


def _check_supernet(builder: ModelBuilder, shape: tuple[int, ...], check: Any,
                    seed: int) -> None:
    """On the hook's example space (or the builder's): a sampled path runs and trains only the
    weights, the mixture trains alpha too, at one-hot alpha the mixture is that path, and the
    architecture alpha encodes is one of the space that builds."""
    hook = load_ref(builder.mixed_edges)
    _expect(isinstance(hook, type) and issubclass(hook, MixedEdges),
            f"{builder.mixed_edges!r} is not a MixedEdges class")
    space = load_space(hook.example or builder.example[0])
    net = Supernet(space, shape, CLASSES, seed)
    arch = space.sample(random.Random(seed))
    path = net.path_of(arch)
    _expect({k: len(v) for k, v in path.items()} == {k: len(e) for k, e in net.edges.items()},
            "a path has not one op per edge of every kind")
    _expect(len(net.mixed) >= len(path), "the network holds fewer mixed ops than kinds")
    check(net.use(arch), shape, CLASSES)
    _expect(all(a.grad is None for a in net.alpha.values()), "a single path trains alpha")
    check(net.use(None), shape, CLASSES)
    _expect(all(a.grad is not None and a.grad.abs().sum() > 0 for a in net.alpha.values()),
            "the mixture does not train alpha")
    x = torch.randn(BATCH, *shape, generator=torch.Generator().manual_seed(seed))
    net.eval()
    with torch.no_grad():
        for kind, alpha in net.alpha.items():  # softmax of -inf but on the path: one-hot
            alpha.fill_(-float("inf"))
            alpha[range(len(path[kind])), path[kind]] = 0.0
        single, mixed = net.use(arch)(x), net.use(None)(x)
    _expect(torch.allclose(single, mixed, atol=1e-6),
            "at one-hot alpha the mixture is not the single path")
    derived = net.derive()
    net.path_of(derived)
    build_model(space, derived, shape, CLASSES)
    skips = net.layout.skip_count(derived)
    _expect(isinstance(skips, int) and skips >= 0, f"skip_count gave {skips!r}")


def _check_graph(panels: Any) -> None:
    _expect(isinstance(panels, list) and bool(panels)
            and all(isinstance(g, Graph) for g in panels),
            f"expected a list of Graph panels, got {panels!r}")
    for g in panels:
        ids = {n.id for n in g.nodes}
        _expect(bool(g.edges) and all({e.src, e.dst} <= ids for e in g.edges),
                f"panel {g.title!r}: no edges, or an edge between undeclared nodes")
    facts(panels)  # a DAG, with a depth


__all__ = ["ContractError", "check_builder", "check_strategy"]
