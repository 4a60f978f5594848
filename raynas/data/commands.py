"""The verbs of ``raynas data`` (making or writing a dataset to search), as descriptors that own
their flags, so an application adds its verb from its own folder with one
``register_data_command(DataCommand(...))`` and ``raynas/cli/data.py`` is a loop over them.
Light on imports: the CLI builds its parser from it; the work sits behind the lazy ``run``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from raynas.registry import Ref, Registry


@dataclass(frozen=True)
class DataCommand:
    """``raynas data NAME``: ``arguments`` adds its flags to its parser; ``run`` (a
    ``"package.module:main"``, imported on use) takes the parsed flags."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Ref


DATA_COMMANDS: Registry[DataCommand] = Registry("raynas data", "data command")
register_data_command = DATA_COMMANDS.register
