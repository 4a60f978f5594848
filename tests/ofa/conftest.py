"""Fixtures of the Once-for-All tests: a small ofa space, two stages of 1-2 blocks with every
elastic dimension present (kernel 3/5/7, expand 2/3, depth 1-2, resolution 0.75/1)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

TINY = {
    "name": "ofa_tiny", "model": "ofa", "description": "tiny Once-for-All space for tests",
    "space": {
        "stem_channels": 8,
        "resolution": {"choice": [0.75, 1.0]},
        "stages": {
            "s1": {"channels": 8, "stride": 1, "blocks": {
                "repeat": [1, 2], "block": {"kernel": {"choice": [3, 5, 7]},
                                            "expand": {"choice": [2, 3]}}}},
            "s2": {"channels": 16, "stride": 2, "blocks": {
                "repeat": [1, 2], "block": {"kernel": {"choice": [3, 5, 7]},
                                            "expand": {"choice": [2, 3]}}}},
        },
    },
}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """As a trial with one CPU trains: on the shared 2-core machine a second torch thread makes
    these small networks wait for a core (measured 40x slower under load)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_doc() -> dict:
    """The tiny space's YAML document, a copy a test may change."""
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_space():
    from raynas.estimation import load_space

    return load_space(TINY)


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> str:
    """The tiny space as a YAML file (what ``raynas ofa train --space`` takes)."""
    path = tmp_path / "ofa_tiny.yaml"
    path.write_text(yaml.safe_dump(TINY, sort_keys=False))
    return str(path)
