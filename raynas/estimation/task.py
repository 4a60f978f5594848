"""Tasks: what a search's networks learn and how a trial scores them. Classification is the
core's task; applications register theirs (segmentation, detection, a tabular benchmark's
lookups) from their own folders, so the driver, ``resolve`` and the trainers dispatch through
this registry and never name an application."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raynas.registry import Ref, Registry, load_ref

#: What ``--fidelity`` and ``--proxy-task`` can vary (``raynas.estimation.fidelity``).
FIDELITIES = ("data", "width", "resolution")


@dataclass(frozen=True)
class Task:
    """A kind of learning problem, as the registry knows it.

    ``trial`` is the Tune function trainable (called with the config and ``space=``, ``data=``,
    ``settings=``); ``final`` trains a search's best architecture on train+val and scores it
    once on the test split (``(space, arch, data, epochs, settings) -> Retrained``), or is None
    where results are looked up, not trained. ``problem`` (a ``raynas.estimation.problem.
    Problem``) is the loss and scores of networks that give logits: the shared epoch loop
    trains them, and the strategies that score networks on the data themselves
    (``Strategy.needs_dataset``) need one. ``models`` are the builder tasks whose networks it
    trains (``ModelBuilder.task``; None: any space, as a table looks any architecture up).
    """

    name: str
    trial: Ref
    final: Ref | None = None
    problem: Ref | None = None
    models: tuple[str, ...] | None = None
    # For errors: what its models do ("classifies"), what its data holds ("has one label per
    # input"), spaces for it ("macro_cnn") and how to give it data.
    does: str = ""
    holds: str = ""
    spaces: str = ""
    data: str = ""
    fidelities: tuple[str, ...] = FIDELITIES  # what proxy tasks and rungs may vary
    check: Ref | None = None  # (resolved) -> None: what else a search of this task needs
    # Without ``final``: (data, space, arch, results) -> the best's test metrics, looked up.
    outcome: Ref | None = None
    retry: bool = True  # a failed trial is worth retrying (a failed lookup fails again)
    export: Ref | None = None  # a raynas.experiment.export.Exporter (None: the pt2 program)

    def load(self, part: str) -> Any:
        """One of the task's parts (``trial``, ``final``, ``problem``, ...), imported."""
        ref = getattr(self, part)
        return None if ref is None else load_ref(ref)


TASKS: Registry[Task] = Registry("task", "task")
register_task = TASKS.register

register_task(Task(
    "classification", "raynas.estimation.train:train_trial", "raynas.estimation.train:retrain",
    problem="raynas.estimation.problem:CLASSIFICATION", models=("classification",),
    does="classifies", holds="has one label per input", spaces="macro_cnn, small_cnn",
    data="labelled data (digits, npz:PATH, folder:DIR, ...)",
    check="raynas.estimation.problem:check_inputs"))
