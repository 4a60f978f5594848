"""What a strategy is to raynas (``Strategy``, its ``options``, the ``StrategyContext`` it is
built from and the ``Plan`` it returns), and the common ground of the searchers we write
ourselves (``SpaceSearcher``: evolution, REINFORCE, the predictors).

Those searchers propose whole architectures from a ``Space`` and learn from one scalar reward
per trial, so metric/mode handling, the pending-trial bookkeeping and save/restore live here once.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import random
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any

import torch
from ray.tune.search import Searcher

from raynas.config import TIME_ATTR
from raynas.errors import ConfigError, did_you_mean
from raynas.estimation import Estimator
from raynas.space import Arch, Space
from raynas.strategies.dedup import Dedup


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """The small models of searchers (REINFORCE's controller, the predictors) run on the Tune
    driver while the trials fill the cores: on one torch thread, since with more each small
    product waits for a free core (a BANANAS suggestion on a busy 2-core machine: 4.2 s with 2
    threads, 45 ms with 1). The caller's setting comes back after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class SpaceSearcher(Searcher):
    """A Tune ``Searcher`` over a space's architectures with a seeded RNG.

    Subclasses implement ``propose()`` (the next architecture) and ``learn(trial_id, arch,
    reward)`` (a finished trial; ``reward`` is the metric, negated when minimising). All state
    except the space is in ``__dict__``, so ``get_state``/``save`` capture a search exactly and a
    restored searcher continues with the same random stream.
    """

    def __init__(self, space: Space, metric: str | None = None, mode: str | None = None,
                 seed: int = 0) -> None:
        super().__init__(metric=metric, mode=mode)
        self.space = space
        self.rng = random.Random(seed)
        self.pending: dict[str, Arch] = {}
        self.num_evaluated = 0  # points given by add_evaluated_point

    # --- what subclasses write ---------------------------------------------------------------
    def propose(self) -> Arch:
        raise NotImplementedError

    def learn(self, trial_id: str, arch: Arch, reward: float) -> None:
        raise NotImplementedError

    def forget(self, trial_id: str) -> None:
        """A trial ended without a usable reward (error, missing or non-finite metric)."""

    def adopt(self, trial_id: str, arch: Arch) -> None:
        """``arch`` was evaluated outside this searcher (``add_evaluated_point``): record what
        ``learn`` needs for it that ``propose`` would have recorded."""

    # --- the Tune Searcher interface ----------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        # Values given at construction win; Tune's TuneConfig fills the gaps. The space comes
        # from ``Space``, so ``config`` (Tune's param_space) is not needed.
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any]:
        if not self._metric or self._mode not in ("min", "max"):
            raise RuntimeError(f"{type(self).__name__}: metric and mode must be set "
                               "(pass them or use TuneConfig(metric=..., mode=...))")
        arch = self.propose()
        self.pending[trial_id] = arch
        return self.space.encode(arch)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        arch = self.pending.pop(trial_id, None)
        if arch is None:
            return
        reward = None if error or not result else self.reward(result)
        if reward is None:
            self.forget(trial_id)
        else:
            self.learn(trial_id, arch, reward)

    def add_evaluated_point(self, parameters: dict[str, Any], value: float,
                            error: bool = False, pruned: bool = False,
                            intermediate_values: list[float] | None = None) -> None:
        """An earlier result (Tune's ``points_to_evaluate`` with ``evaluated_rewards``),
        learned as a finished trial of this search."""
        trial_id = f"evaluated_{self.num_evaluated}"
        self.num_evaluated += 1
        arch = self.space.decode(parameters)
        self.adopt(trial_id, arch)
        self.pending[trial_id] = arch
        failed = error or pruned
        self.on_trial_complete(trial_id, None if failed else {self._metric: value}, failed)

    def reward(self, result: dict) -> float | None:
        value = result.get(self._metric)
        if not isinstance(value, int | float) or not math.isfinite(value):
            return None
        return float(value) if self._mode == "max" else -float(value)

    # --- state -----------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "space"}

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))


#: The flag that sets a strategy's options, named in every error about them.
OPTION = "--strategy-option"
#: The types an option may have: what a ``KEY=VALUE`` string converts to.
OPTION_TYPES = (int, float, bool, str)
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclass(frozen=True)
class NoOptions:
    """The options of a strategy that has none."""


def _convert(key: str, value: Any, kind: type) -> Any:
    """One option's value, a string as the command line gives it (or a value of the field's
    type, from Python), converted by the field's type; a bad one is a one-line error."""
    text = str(value).strip()
    try:
        if kind is bool:
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError
            return text.lower() in _TRUE
        return kind(text)
    except ValueError:
        what = {int: "a whole number", float: "a number", bool: "true or false"}[kind]
        raise ConfigError(f"{OPTION} {key}={text}: expected {what}") from None


def _option_types(options: type) -> dict[str, type]:
    """The fields of an options class and their types; a class that cannot be one (not a
    frozen dataclass, a field without a default or of another type) is a bug of its author,
    so ``TypeError``, at ``register``."""
    if (not isinstance(options, type) or not is_dataclass(options)
            or not options.__dataclass_params__.frozen):
        raise TypeError(f"Strategy.options: {options!r} is not a frozen dataclass")
    hints = typing.get_type_hints(options)
    for f in fields(options):
        if hints[f.name] not in OPTION_TYPES:
            raise TypeError(f"Strategy.options: {options.__name__}.{f.name} is a "
                            f"{hints[f.name]}, not one of int, float, bool, str")
        if f.default is MISSING:
            raise TypeError(f"Strategy.options: {options.__name__}.{f.name} has no default")
    return {f.name: hints[f.name] for f in fields(options)}


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
    estimator: Estimator | None = None

    @property
    def dedup(self) -> Any:
        """The ``Dedup`` wrapper inside the searcher chain, if any (to attach ``on_reuse``)."""
        searcher = self.searcher
        while searcher is not None and not isinstance(searcher, Dedup):
            searcher = getattr(searcher, "searcher", None)
        return searcher


@dataclass(frozen=True)
class Rungs:
    """What a scheduler compares trials in: the fidelity's budget (``TIME_ATTR``: epochs, or
    proxy-task rungs) from one unit up to the context's ``max_budget``, or - a time budget's
    plan - seconds of training (Tune's ``time_total_s``) from ``grace`` up to ``max``."""

    attr: str = TIME_ATTR
    grace: float = 1
    max: float | None = None  # None: the context's max_budget


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
    rungs: Rungs = Rungs()
    data: Any = None  # the Dataset, for strategies that look at it (zero_cost)
    constraints: tuple[Any, ...] = ()  # objectives.Constraint: mo-asha never promotes a breach
    #: the strategy's own options, an instance of its ``Strategy.options``, given by whoever
    #: builds the context (``strategy.parse_options(...)``); None: ``plan_search`` gives the
    #: strategy's defaults
    options: Any = None

    @classmethod
    def of(cls, space: Space, objectives: Sequence[tuple[str, str]], **rest: Any
           ) -> StrategyContext:
        """A context for ``objectives`` ((metric, mode) pairs): one of them as plain strings,
        several as lists, as Tune's searchers take them."""
        metrics, modes = [m for m, _ in objectives], [mode for _, mode in objectives]
        if len(objectives) == 1:
            return cls(space, metrics[0], modes[0], **rest)
        return cls(space, metrics, modes, **rest)

    @property
    def trials(self) -> int:
        return self.num_trials or DEFAULT_NUM_TRIALS

    @property
    def primary(self) -> tuple[str, str]:
        if isinstance(self.metric, str):
            return self.metric, str(self.mode)
        return self.metric[0], self.mode[0]


@dataclass(frozen=True)
class Strategy:
    """A strategy as the registry knows it: how to build its plan, and what it can do.

    ``check(resolved)`` (a ``raynas.experiment.Resolved``) raises ``ConfigError`` for settings this
    strategy cannot run with; the capabilities below are checked for every strategy alike."""

    name: str
    build: Callable[[StrategyContext], Plan]
    description: str
    multi_objective: bool = False  # takes several metrics/modes itself (else: scalarised)
    steers_by_first: bool = False  # under mo-asha, which ranks by all of them, steers by the first
    pbt: bool = False  # may seed PBT's population (Tune's PBT accepts no model-based searcher)
    needs_dataset: bool = False  # scores networks on the data itself (needs a task's Problem)
    scores: str | None = None  # the task it scores networks as, by a loss of its own
    stops_early: bool = False  # brings a scheduler that stops trials on their learning curves
    epochs_only: bool = False  # trains one network per run: --fidelity epochs only
    inner: bool = True  # can be oneshot's search against a trained supernet
    extendable: bool = True  # has state to go on from (raynas extend)
    default_objectives: tuple[str, ...] = ("val_accuracy:max",)
    check: Callable[[Any], None] | None = None
    #: A frozen dataclass: the strategy's own settings, ``--strategy-option KEY=VALUE``. Every
    #: field has a default and a type of ``OPTION_TYPES`` (``metadata={"help": ...}`` is shown
    #: by ``raynas strategies``); its ``__post_init__`` raises a one-line ``ConfigError`` for a
    #: bad value. ``build`` finds the parsed object in ``ctx.options``.
    options: type = NoOptions

    def __post_init__(self) -> None:
        _option_types(self.options)

    def parse_options(self, given: Mapping[str, Any] | None = None) -> Any:
        """``--strategy-option`` KEY=VALUE pairs -> this strategy's options object (the
        defaults for the keys not given)."""
        types = _option_types(self.options)
        for key in given or {}:
            if key not in types:
                known = (f"{did_you_mean(key, types)}; known: {', '.join(types)}" if types
                         else "; it takes no options")
                raise ConfigError(f"{OPTION} {key}: not an option of --strategy {self.name}"
                                  f"{known}")
        return self.options(**{key: _convert(key, value, types[key])
                               for key, value in (given or {}).items()})
