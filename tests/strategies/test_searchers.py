"""The searchers we write (evolution, REINFORCE), the dedup wrapper and the Pareto front,
driven directly through the Tune ``Searcher`` interface (no Ray needed)."""

from __future__ import annotations

import random
import statistics

import pytest
from ray.tune.search import Searcher

from raynas import schedulers, strategies
from raynas.bench.strategies import (
    SYNTHETIC_SPACE,
    SYNTHETIC_TARGET,
    drive,
    evaluations_to_optimum,
    synthetic_objective,
    synthetic_run,
)
from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.experiment.resolve import check_combination
from raynas.experiment.tuner import plan_search
from raynas.objectives.pareto import pareto_front, parse_objectives
from raynas.space import arch_hash
from raynas.strategies import STRATEGIES
from raynas.strategies.base import StrategyContext
from raynas.strategies.dedup import Dedup
from raynas.strategies.evolution import RegularizedEvolution, crossover
from raynas.strategies.rl import ReinforceController

SYNTH = load_space(SYNTHETIC_SPACE)
SMALL = load_space("small_cnn")
SCORE = synthetic_objective(SYNTH, SYNTHETIC_TARGET)


def make(kind: str, seed: int = 0):
    if kind == "evolution":
        return RegularizedEvolution(SYNTH, "score", "max", population_size=8, sample_size=3,
                                    crossover_prob=0.5, seed=seed)
    return ReinforceController(SYNTH, "score", "max", batch_size=2, seed=seed)


def run_steps(searcher, start: int, steps: int) -> list[dict]:
    """Suggest/complete ``steps`` trials one at a time; returns the suggested configs."""
    configs = []
    for i in range(start, start + steps):
        config = searcher.suggest(f"t{i}")
        configs.append(config)
        searcher.on_trial_complete(f"t{i}", {"score": SCORE(SYNTH.decode(config))})
    return configs


@pytest.mark.parametrize("kind", ["evolution", "rl"])
def test_same_seed_same_search_and_other_seed_differs(kind):
    assert run_steps(make(kind, 1), 0, 30) == run_steps(make(kind, 1), 0, 30)
    assert run_steps(make(kind, 1), 0, 30) != run_steps(make(kind, 2), 0, 30)


@pytest.mark.parametrize("kind", ["evolution", "rl"])
def test_save_restore_continues_exactly(kind, tmp_path):
    whole = make(kind)
    expected = run_steps(whole, 0, 40)

    first = make(kind)
    run_steps(first, 0, 20)
    pending = first.suggest("t20")  # a trial in flight at the checkpoint
    first.save(str(tmp_path / "searcher.pkl"))

    resumed = make(kind, seed=99)  # a fresh object: everything must come from the file
    resumed.restore(str(tmp_path / "searcher.pkl"))
    resumed.on_trial_complete("t20", {"score": SCORE(SYNTH.decode(pending))})
    assert [pending, *run_steps(resumed, 21, 19)] == expected[20:]


def test_evolution_ages_out_the_oldest_and_ignores_failures():
    evo = RegularizedEvolution(SMALL, "val_accuracy", "max", population_size=4, sample_size=2)
    for i in range(6):
        evo.suggest(f"t{i}")
        evo.on_trial_complete(f"t{i}", {"val_accuracy": i / 10})
    evo.suggest("failed")
    evo.on_trial_complete("failed", error=True)
    evo.suggest("no-metric")
    evo.on_trial_complete("no-metric", {"epoch": 1})
    assert [reward for _, reward in evo.population] == [0.2, 0.3, 0.4, 0.5]
    assert not evo.pending


def test_evolution_minimises_when_mode_is_min():
    evo = RegularizedEvolution(SMALL, population_size=2, sample_size=2)
    evo.set_search_properties("val_loss", "min", {})
    for i, loss in enumerate([0.9, 0.1]):
        evo.suggest(f"t{i}")
        evo.on_trial_complete(f"t{i}", {"val_loss": loss})
    assert max(evo.population, key=lambda m: m[1])[1] == -0.1


def test_crossover_takes_every_decision_from_a_parent():
    rng = random.Random(0)
    for _ in range(50):
        a, b = SYNTH.sample(rng), SYNTH.sample(rng)
        child = SYNTH.encode(crossover(SYNTH, a, b, rng))
        fa, fb = SYNTH.encode(a), SYNTH.encode(b)
        assert all(v in (fa.get(k), fb.get(k)) for k, v in child.items())


def test_rl_controller_covers_the_space_and_batches_updates():
    rl = ReinforceController(SMALL, "val_accuracy", "max", batch_size=3, seed=0)
    counts = set()
    for i in range(7):
        arch = SMALL.decode(rl.suggest(f"t{i}"))
        counts.add(len(arch["layers"]))
        rl.on_trial_complete(f"t{i}", {"val_accuracy": 0.1 * len(arch["layers"])})
    assert counts == {1, 2}  # the conditional (repeat) decision is emitted first
    assert rl.num_updates == 2 and len(rl.batch) == 1


def test_synthetic_objective_optimum_is_the_target():
    assert SCORE(SYNTH.decode(SYNTHETIC_TARGET)) == 1.0
    assert all(SCORE(SYNTH.sample(random.Random(s))) < 1.0 for s in range(200))


def test_evolution_rl_and_local_search_converge_clearly_faster_than_random():
    """The issue's convergence check: on an objective whose optimum is known, evolution, RL and
    local search reach it in clearly fewer evaluations than random search (fixed seeds; no
    noise). Ten seeds where a run is cheap (five for RL's controller and for random, which
    never gets there): the median of five is one seed's luck."""
    budget = 300
    seeds = {"random": 5, "evolution": 10, "rl": 5, "local_search": 10}
    evals = {s: [evaluations_to_optimum(synthetic_run(s, seed, budget, concurrency=2))
                 or budget for seed in range(n)] for s, n in seeds.items()}
    assert statistics.median(evals["random"]) == budget  # random: not within 300 (p ~ 1%)
    for strategy in ("evolution", "rl", "local_search"):
        assert sum(e < budget for e in evals[strategy]) >= 0.8 * seeds[strategy], evals
        assert statistics.median(evals[strategy]) <= budget / 2, evals


class Fixed(Searcher):
    """Proposes architectures from a fixed list, recording what it is told."""

    def __init__(self, archs):
        super().__init__("val_accuracy", "max")
        self.archs = list(archs)
        self.told: list[tuple[str, dict | None, bool]] = []

    def suggest(self, trial_id):
        return SMALL.encode(self.archs.pop(0)) if self.archs else None

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.told.append((trial_id, result, error))


def test_dedup_reuses_results_and_waits_for_running_duplicates():
    a, b = SMALL.grid()[:2]
    inner = Fixed([a, a, b, a])
    seen = []
    dedup = Dedup(inner, SMALL)
    dedup.on_reuse = lambda trial, digest, result: seen.append((trial, digest))
    assert SMALL.decode(dedup.suggest("t1")) == a
    # t2: `a` is still training, so that proposal waits and `b` becomes the trial
    assert SMALL.decode(dedup.suggest("t2")) == b
    dedup.on_trial_complete("t1", {"val_accuracy": 0.7, "config": {"x": 1}})
    assert ("t2", {"val_accuracy": 0.7}, False) in inner.told  # the waiter got t1's result
    # t3: `a` again -> answered from t1's result without a trial; nothing new left -> None
    assert dedup.suggest("t3") is None
    assert seen == [("t1", arch_hash(a)), ("t1", arch_hash(a))]
    assert [r["trial_id"] for r in dedup.reused] == ["t1", "t1"]


def test_a_failed_trial_counts_as_the_worst_result_so_far():
    a, b, c, d = SMALL.grid()[:4]
    inner = Fixed([a, b, c, d, d])
    dedup = Dedup(inner, SMALL)
    dedup.set_search_properties("val_accuracy", "max", {})
    dedup.suggest("t1")
    dedup.on_trial_complete("t1", error=True)  # nothing succeeded yet: no scale, an error
    assert inner.told[-1] == ("t1", None, True)
    for trial, value in (("t2", 0.9), ("t3", 0.4)):
        dedup.suggest(trial)
        dedup.on_trial_complete(trial, {"val_accuracy": value})
    dedup.suggest("t4")  # architecture d
    dedup.on_trial_complete("t4", error=True)
    assert inner.told[-1] == ("t4", {"val_accuracy": 0.4, "raynas_failed": True}, False)
    # d proposed again: answered with the same penalty, not trained (and failed) again
    assert dedup.suggest("t5") is None
    assert inner.told[-1][1] == {"val_accuracy": 0.4, "raynas_failed": True}


def test_dedup_finishes_when_every_architecture_was_trained():
    plan = strategies.get("random").build(StrategyContext(SMALL, "score", "max", 0, 500, 1))
    curve = drive(plan.searcher, lambda arch: 0.5, SMALL, budget=500)
    assert len(curve) == SMALL.size() == 72  # each architecture once, then FINISHED


def test_registry_names_and_errors():
    for name in ("random", "grid", "tpe", "gp", "evolution", "rl", "nsga2", "bohb"):
        assert name in STRATEGIES
    with pytest.raises(ConfigError, match="did you mean 'evolution'"):
        strategies.get("evolutoin")
    with pytest.raises(ConfigError, match="did you mean 'asha'"):
        schedulers.get("ahsa")
    with pytest.raises(ConfigError, match="multi-objective"):
        check_combination(strategies.get("tpe"), schedulers.get("asha"), 2)
    with pytest.raises(ConfigError, match="pbt"):
        check_combination(strategies.get("evolution"), schedulers.get("pbt"), 1)
    with pytest.raises(ConfigError, match="fixed architecture"):
        plan_search(strategies.get("random"), schedulers.get("pbt"),
                    StrategyContext(SMALL, "val_accuracy", "max", 0, 4, 1, scheduler="pbt"))


def test_objectives_parse_and_pareto_front_is_non_dominated():
    objectives = parse_objectives(["val_accuracy:max", "params:min"], [])
    assert objectives == [("val_accuracy", "max"), ("params", "min")]
    with pytest.raises(ConfigError):
        parse_objectives(["val_accuracy:up"], [])
    rows = [{"val_accuracy": a, "params": p, "trial_id": str(i)}
            for i, (a, p) in enumerate([(0.9, 100), (0.8, 50), (0.85, 200), (0.7, 10),
                                        (0.9, 120), (0.6, 60)])]
    front = pareto_front(rows, objectives)
    assert [r["trial_id"] for r in front] == ["0", "1", "3"]


@pytest.mark.parametrize("strategy", ["evolution", "rl"])
def test_tune_checkpoints_and_restores_the_whole_searcher_chain(strategy, tmp_path):
    """Tune saves a search (limiter -> dedup -> our searcher) with ``save_to_dir``; a restored
    search proposes what the uninterrupted one would have."""
    from ray.tune.search import SearchGenerator

    def fresh():
        ctx = StrategyContext(SYNTH, "score", "max", 3, 40, 1)
        return strategies.get(strategy).build(ctx).searcher

    whole = fresh()
    expected = run_steps(whole, 0, 30)
    first = fresh()
    run_steps(first, 0, 15)
    SearchGenerator(first).save_to_dir(str(tmp_path), "s")
    restored = SearchGenerator(fresh())
    restored.restore_from_dir(str(tmp_path))
    assert run_steps(restored.searcher, 15, 15) == expected[15:]
