"""Strategy and scheduler registries: a name -> a configured Ray Tune searcher or scheduler.

A strategy decides *which* architectures to try (a Tune ``Searcher``); a scheduler decides how
long each one trains (a Tune ``TrialScheduler``). Both are plain Tune objects, so they work under
``ConcurrencyLimiter``, on a cluster and with Tune's fault tolerance unchanged. Every searcher is
wrapped in ``Dedup`` (an architecture is trained once per search) and a ``ConcurrencyLimiter``.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raynas.errors import ConfigError, did_you_mean
from raynas.estimation.fidelity import TIME_ATTR
from raynas.space import Space

DEFAULT_NUM_TRIALS = 16


@dataclass(frozen=True)
class Plan:
    """What the Tuner needs from a strategy: a searcher (or None for Tune's variant generator),
    the param space it expects, how many trials to run, and - for strategies that come with
    their own scheduler (bohb) or need one (pbt) - that scheduler, which replaces the default."""

    searcher: Any
    param_space: dict[str, Any]
    num_trials: int
    scheduler: Any = None
    notes: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)  # JSON files for the parent run
    arch_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # by arch hash
    # Weight sharing (oneshot, darts): trials score with shared weights instead of training
    # each architecture; gives the trainable, tracker and best arch (see weight_sharing).
    estimator: Any = None

    @property
    def dedup(self) -> Any:
        """The ``Dedup`` wrapper inside the searcher chain, if any (to attach ``on_reuse``)."""
        from raynas.strategies.dedup import Dedup

        searcher = self.searcher
        while searcher is not None and not isinstance(searcher, Dedup):
            searcher = getattr(searcher, "searcher", None)
        return searcher


@dataclass(frozen=True)
class StrategyContext:
    """``metric``/``mode`` are lists for a multi-objective search (the first one is primary)."""

    space: Space
    metric: str | list[str]
    mode: str | list[str]
    seed: int
    num_trials: int | None
    concurrency: int
    max_budget: int = 8  # in the fidelity's units (``TIME_ATTR``)
    scheduler: str = "fifo"
    data: Any = None  # the Dataset, for strategies that look at it (zero_cost)
    zero_cost: Any = None  # ZeroCostSettings for --strategy zero_cost
    constraints: tuple[Any, ...] = ()  # objectives.Constraint: mo-asha never promotes a breach
    supernet: str = "spos"  # --strategy oneshot: how the supernet's training samples paths
    oneshot_searcher: str = "evolution"  # --strategy oneshot: the search against the supernet

    @property
    def trials(self) -> int:
        return self.num_trials or DEFAULT_NUM_TRIALS

    @property
    def primary(self) -> tuple[str, str]:
        if isinstance(self.metric, str):
            return self.metric, str(self.mode)
        return self.metric[0], self.mode[0]


def _limited(searcher: Any, ctx: StrategyContext) -> Any:
    from ray.tune.search import ConcurrencyLimiter

    from raynas.strategies.dedup import Dedup

    return ConcurrencyLimiter(Dedup(searcher, ctx.space), max_concurrent=ctx.concurrency)


def _grid(ctx: StrategyContext) -> Plan:
    """Every architecture of a finite space once (``--num-trials`` caps it), in a fixed order.

    Tune's ``grid_search`` takes the product of independent parameters, which would repeat the
    same architecture for every value of an inactive (conditional) decision; the space's own
    enumeration has no such duplicates, so it is fed to Tune as the points to evaluate.
    """
    from ray.tune.search.basic_variant import BasicVariantGenerator

    points = [ctx.space.encode(a) for a in ctx.space.grid()]
    if ctx.num_trials:
        points = points[: ctx.num_trials]
    searcher = BasicVariantGenerator(points_to_evaluate=points, max_concurrent=ctx.concurrency)
    # Tune needs every key of a preset point in the param space; the inactive ones it fills in
    # are ignored by ``Space.decode``.
    return Plan(searcher, ctx.space.to_tune(), len(points))


def _optuna(sampler_factory: Callable[[StrategyContext], Any]) -> Callable[[StrategyContext],
                                                                           Plan]:
    """A strategy from an Optuna sampler: ``OptunaSearch`` with the space's define-by-run
    function, so conditional decisions are suggested only when active."""

    def make(ctx: StrategyContext) -> Plan:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = sampler_factory(ctx)
        searcher = OptunaSearch(space=ctx.space.optuna_define_by_run, metric=ctx.metric,
                                mode=ctx.mode, sampler=sampler)
        return Plan(_limited(searcher, ctx), {}, ctx.trials)

    return make


def _random_sampler(ctx: StrategyContext) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=ctx.seed)


def _tpe_sampler(ctx: StrategyContext) -> Any:
    import optuna

    # multivariate + group: TPE models decisions jointly and handles the conditional (repeat)
    # structure by grouping trials that share the same active decisions.
    return optuna.samplers.TPESampler(seed=ctx.seed, multivariate=True, group=True,
                                      n_startup_trials=6)


def _gp_sampler(ctx: StrategyContext) -> Any:
    import optuna

    # Decisions outside the intersection of all trials' spaces (layers that not every
    # architecture has) are drawn by the independent sampler; that is expected, not news.
    return optuna.samplers.GPSampler(seed=ctx.seed, n_startup_trials=min(10, ctx.trials // 3 + 1),
                                     warn_independent_sampling=False)


def _nsga2_sampler(ctx: StrategyContext) -> Any:
    from raynas.strategies.samplers import NSGAIISampler

    return NSGAIISampler(seed=ctx.seed,
                                         population_size=max(4, min(50, ctx.trials // 4)))


def _zero_cost(ctx: StrategyContext) -> Plan:
    from raynas.strategies import zero_cost

    return zero_cost.plan(ctx)


def _oneshot(ctx: StrategyContext) -> Plan:
    from raynas.strategies import weight_sharing

    return weight_sharing.oneshot_plan(ctx)


def _darts(ctx: StrategyContext) -> Plan:
    from raynas.strategies import weight_sharing

    return weight_sharing.darts_plan(ctx)


def _evolution(ctx: StrategyContext) -> Plan:
    from raynas.strategies.evolution import RegularizedEvolution

    metric, mode = ctx.primary
    population = max(4, min(20, ctx.trials // 4))
    searcher = RegularizedEvolution(ctx.space, metric, mode, population_size=population,
                                    sample_size=max(2, population // 4), seed=ctx.seed)
    return Plan(_limited(searcher, ctx), {}, ctx.trials)


def _rl(ctx: StrategyContext) -> Plan:
    from raynas.strategies.rl import ReinforceController

    metric, mode = ctx.primary
    searcher = ReinforceController(ctx.space, metric, mode, batch_size=max(2, ctx.concurrency),
                                   seed=ctx.seed)
    return Plan(_limited(searcher, ctx), {}, ctx.trials)


def bohb_engine() -> str:
    """Which BOHB runs here: Ray Tune's ``TuneBOHB`` needs ``hpbandster`` and ``ConfigSpace``."""
    found = all(importlib.util.find_spec(m) for m in ("hpbandster", "ConfigSpace"))
    return "tune-bohb" if found else "tpe-hyperband"


def _bohb(ctx: StrategyContext) -> Plan:
    """BOHB (Falkner et al. 2018): a model-based sampler whose trials Hyperband stops early.

    With ``hpbandster`` installed this is Ray Tune's own pair (``TuneBOHB`` + its
    ``HyperBandForBOHB``, which budgets by epochs); without it, Optuna's TPE with Tune's
    ``HyperBandScheduler`` - the same idea from maintained parts. ``notes`` says which ran.
    """
    from ray.tune.schedulers import HyperBandForBOHB, HyperBandScheduler

    metric, mode = ctx.primary
    engine = bohb_engine()
    if engine == "tpe-hyperband":
        plan = _optuna(_tpe_sampler)(ctx)
        scheduler = HyperBandScheduler(time_attr=TIME_ATTR, max_t=ctx.max_budget,
                                       reduction_factor=3)
        return Plan(plan.searcher, {}, plan.num_trials, scheduler, {"bohb_engine": engine})
    from ray.tune.search.bohb import TuneBOHB

    config_space = TuneBOHB.convert_search_space(ctx.space.to_tune())
    config_space.seed(ctx.seed)
    searcher = TuneBOHB(space=config_space, metric=metric, mode=mode, seed=ctx.seed,
                        max_concurrent=ctx.concurrency)
    scheduler = HyperBandForBOHB(time_attr=TIME_ATTR, max_t=ctx.max_budget,
                                 reduction_factor=3)
    return Plan(_limited(searcher, ctx), {}, ctx.trials, scheduler, {"bohb_engine": engine})


def pbt_keys(space: Space) -> list[str]:
    """The decisions PBT may mutate: training hyperparameters, when nothing else is searched.

    The optimizer is excluded: a trial that exploits another copies its optimizer state, which
    only loads into the same optimizer type.
    """
    searched = [d.key for d in space.decisions()
                if d.param.options() is None or len(d.param.options()) > 1]
    arch = [k for k in searched if not k.startswith("train.") or k == "train.optimizer"]
    if arch or not searched:
        raise ConfigError(
            f"--scheduler pbt tunes the training hyperparameters of a fixed architecture, but "
            f"space {space.name!r} searches {', '.join(arch) or 'nothing'}; use a space "
            "whose architecture and optimizer are constant, e.g. --space fixed_cnn")
    return searched


def _pbt_plan(ctx: StrategyContext) -> Plan:
    """PBT starts from a random population (Tune allows no other searcher with it) and then
    explores by mutating hyperparameters of running trials, copying the better ones' weights -
    which only makes sense when every trial has the same architecture."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    pbt_keys(ctx.space)
    searcher = BasicVariantGenerator(random_state=ctx.seed, max_concurrent=ctx.concurrency)
    return Plan(searcher, ctx.space.to_tune(), ctx.trials)


STRATEGIES: dict[str, tuple[Callable[[StrategyContext], Plan], str]] = {
    "random": (_optuna(_random_sampler), "random search (Optuna's RandomSampler)"),
    "grid": (_grid, "every architecture of a finite space once"),
    "tpe": (_optuna(_tpe_sampler), "Bayesian: Optuna's TPE, define-by-run conditionals"),
    "gp": (_optuna(_gp_sampler), "Bayesian: Optuna's Gaussian-process sampler"),
    "evolution": (_evolution, "regularized (aging) evolution, AmoebaNet (Real et al. 2019)"),
    "rl": (_rl, "REINFORCE LSTM controller (Zoph & Le 2017)"),
    "nsga2": (_optuna(_nsga2_sampler), "multi-objective evolution: Optuna's NSGA-II"),
    "bohb": (_bohb, "BOHB: model-based sampling + Hyperband (brings its own scheduler)"),
    "zero_cost": (_zero_cost, "score many sampled architectures with a zero-cost proxy, train "
                              "the top-k"),
    "oneshot": (_oneshot, "weight sharing: train a supernet (SPOS or ENAS), then search "
                          "against it (--oneshot-searcher, default evolution)"),
    "darts": (_darts, "gradient-based: a Tune sweep over DARTS runs (Liu et al. 2019)"),
}
MULTI_OBJECTIVE = ("nsga2", "random")
# Under mo-asha the scheduler ranks by every objective, so a searcher that steers by the first
# one (evolution) fits too.
MO_ASHA_STRATEGIES = (*MULTI_OBJECTIVE, "evolution")
PBT_STRATEGIES = ("random",)


def default_objectives(strategy: str) -> list[str]:
    """Without ``--objective``: validation accuracy, plus parameters for NSGA-II (its point is
    the accuracy/size trade-off)."""
    return ["val_accuracy:max", "params:min"] if strategy == "nsga2" else ["val_accuracy:max"]


# Schedulers get metric and mode from ``TuneConfig`` (Tune refuses them in both places).
def _fifo(max_budget: int, space: Space) -> Any:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def _asha(max_budget: int, space: Space) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr=TIME_ATTR, max_t=max_budget, grace_period=1,
                         reduction_factor=3)


def _hyperband(max_budget: int, space: Space) -> Any:
    from ray.tune.schedulers import HyperBandScheduler

    return HyperBandScheduler(time_attr=TIME_ATTR, max_t=max_budget,
                              reduction_factor=3)


def _median(max_budget: int, space: Space) -> Any:
    from ray.tune.schedulers import MedianStoppingRule

    return MedianStoppingRule(time_attr=TIME_ATTR, grace_period=1,
                              min_samples_required=3)


def _curve(max_budget: int, space: Space) -> Any:
    from raynas.estimation.learning_curve import LearningCurveStopping

    return LearningCurveStopping(time_attr=TIME_ATTR, max_t=max_budget)


def _pbt(max_budget: int, space: Space) -> Any:
    from ray.tune.schedulers import PopulationBasedTraining

    # A list makes PBT step to a neighbouring value; a continuous domain is scaled by 0.8/1.2
    # and then clipped back into the space's range.
    domains = space.to_tune()
    decisions = {d.key: d.param for d in space.decisions()}
    mutations = {k: decisions[k].options() or domains[k] for k in pbt_keys(space)}
    return PopulationBasedTraining(time_attr=TIME_ATTR,
                                   perturbation_interval=max(1, max_budget // 4),
                                   hyperparam_mutations=mutations,
                                   custom_explore_fn=functools.partial(_clip, decisions))


def _clip(decisions: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    for key, param in decisions.items():
        if param.options() is None and key in config:
            config[key] = min(param.high, max(param.low, float(config[key])))
    return config


def _mo_asha(ctx: StrategyContext) -> Any:
    """Takes the context, not (max_budget, space): it ranks by every objective."""
    from raynas.strategies.mo_asha import MultiObjectiveASHA

    return MultiObjectiveASHA(list(zip(ctx.metric, ctx.mode, strict=True)), ctx.max_budget,
                              constraints=ctx.constraints)


SCHEDULERS: dict[str, tuple[Callable[..., Any], str]] = {
    "fifo": (_fifo, "train every trial for --max-epochs"),
    "asha": (_asha, "asynchronous successive halving: stop the weakest early (Li et al. 2020)"),
    "hyperband": (_hyperband, "synchronous Hyperband brackets (Li et al. 2018); pauses trials"),
    "median": (_median, "median stopping rule: stop a trial below the running median"),
    "curve": (_curve, "learning-curve extrapolation: stop a trial unlikely to beat the best "
                      "(Domhan et al. 2015)"),
    "pbt": (_pbt, "population-based training of the hyperparameters of a fixed architecture"),
    "mo-asha": (_mo_asha, "multi-objective ASHA: stop dominated trials early (Schmucker et al. "
                          "2021)"),
}


def check_names(strategy: str, scheduler: str, num_objectives: int = 1) -> None:
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy: unknown strategy {strategy!r}"
                          f"{did_you_mean(strategy, STRATEGIES)}; known: {', '.join(STRATEGIES)}")
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"--scheduler: unknown scheduler {scheduler!r}"
                          f"{did_you_mean(scheduler, SCHEDULERS)}; known: {', '.join(SCHEDULERS)}")
    if scheduler == "mo-asha" and strategy not in MO_ASHA_STRATEGIES:
        raise ConfigError(f"--scheduler mo-asha: needs --strategy "
                          f"{', '.join(MO_ASHA_STRATEGIES)} (a strategy that takes several "
                          f"objectives or steers by the first), not {strategy!r}")
    if scheduler == "mo-asha" and num_objectives < 2:
        raise ConfigError("--scheduler mo-asha: ranks trials by several objectives; give two or "
                          "more, e.g. --objective val_accuracy:max --objective params:min, "
                          "and no --scalarize")
    if num_objectives > 1 and strategy not in MULTI_OBJECTIVE and scheduler != "mo-asha":
        raise ConfigError(f"--objective: {num_objectives} objectives need a multi-objective "
                          f"strategy ({', '.join(MULTI_OBJECTIVE)}), not {strategy!r}")
    if scheduler == "pbt" and strategy not in PBT_STRATEGIES:
        raise ConfigError(f"--scheduler pbt: Tune's PBT accepts no searcher; use --strategy "
                          f"{' or '.join(PBT_STRATEGIES)} (its initial population is random)")


def make_plan(strategy: str, ctx: StrategyContext) -> Plan:
    if ctx.scheduler == "pbt":
        return _pbt_plan(ctx)
    return STRATEGIES[strategy][0](ctx)


def scheduler_for(plan: Plan, ctx: StrategyContext) -> Any:
    """The scheduler a search runs with: the strategy's own if it brings one, else
    ``ctx.scheduler`` over budgets up to ``ctx.max_budget`` (pbt mutates ``ctx.space``)."""
    if plan.scheduler is None and ctx.scheduler == "mo-asha":
        return _mo_asha(ctx)
    return plan.scheduler or SCHEDULERS[ctx.scheduler][0](ctx.max_budget, ctx.space)


def bracket_warning(scheduler: Any, concurrency: int) -> str | None:
    """Tune's Hyperband is synchronous: it halves a bracket once all the trials it holds reach
    the rung, and a bracket holds only the trials that started before that. Unless every
    bracket's trials run at once, brackets stay part-filled and nothing is halved."""
    from ray.tune.schedulers import HyperBandScheduler

    if not isinstance(scheduler, HyperBandScheduler):
        return None
    # Tune's own bracket arithmetic (n0: trials, r0: first rung; r0 == 0 brackets are skipped).
    total = sum(scheduler._get_n0(s) for s in range(scheduler._s_max_1) if scheduler._get_r0(s))
    if total <= concurrency:
        return None
    return (f"hyperband: its brackets hold {total} trials but --concurrency is {concurrency}; "
            f"they are halved only when their trials run at once, so raise --concurrency to "
            f"{total} (with a fractional --cpus-per-trial) or use --scheduler asha")
