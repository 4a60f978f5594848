"""One torch thread in these tests: tiny 3-D convolutions on a busy 2-core machine run 20-50x
slower with two threads fighting over the cores (OpenMP spinning) than with one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def volume_cache(tmp_path, monkeypatch) -> None:
    """Preprocessed volumes go to the test's folder, not ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
