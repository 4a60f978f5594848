"""The sequences plug-in, loaded explicitly: its entry point is in the installed metadata only
after a reinstall, and these tests must not depend on that. One torch thread: tiny models on
a busy 2-core machine run several times slower with two threads fighting over the cores."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from raynas.tasks import sequences  # noqa: F401  (registers the ops, model, sources)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
