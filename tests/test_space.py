"""The search-space model: loading, validation, and the Tune / Optuna / decision adapters."""

from __future__ import annotations

import random

import optuna
import pytest

from raynas.errors import SpaceError
from raynas.space import arch_hash, builtin_spaces, load_space

MACRO = load_space("macro_cnn")
SMALL = load_space("small_cnn")


def test_builtin_spaces_load_and_report_sizes():
    spaces = builtin_spaces()
    assert {"macro_cnn", "small_cnn"} <= set(spaces)
    assert MACRO.size() == float("inf")  # learning rate is continuous
    assert SMALL.size() == 8 + 8**2  # 1 or 2 layers of 2 ops x 2 widths x 2 connections
    # count + 10 layers x 4 decisions + 4 training hyperparameters
    assert len(MACRO.decisions()) == 1 + 10 * 4 + 4


@pytest.mark.parametrize("space", [MACRO, SMALL], ids=lambda s: s.name)
def test_sample_encode_decode_roundtrip(space):
    rng = random.Random(0)
    for _ in range(300):
        arch = space.sample(rng)
        assert space.decode(space.encode(arch)) == arch
        assert space.validate(arch) is arch


def test_tune_param_space_samples_only_valid_architectures():
    domains = MACRO.to_tune()
    counts = set()
    for seed in range(200):
        rng = random.Random(seed)
        flat = {k: d.sample(random_state=rng.randrange(2**31)) for k, d in domains.items()}
        arch = MACRO.decode(flat)
        MACRO.validate(arch)
        assert len(arch["layers"]) == flat["layers.count"]
        counts.add(len(arch["layers"]))
    assert counts == set(range(1, 11))


def test_optuna_define_by_run_has_real_conditionals():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(60):
        trial = study.ask()
        arch = MACRO.to_optuna(trial)
        MACRO.validate(arch)
        n = trial.params["layers.count"]
        layer_keys = {k.split(".")[1] for k in trial.params if k.startswith("layers.")}
        assert layer_keys == {"count", *map(str, range(n))}  # inactive layers never suggested
        assert MACRO.decode(trial.params) == arch
        study.tell(trial, 0.0)


def test_mutate_changes_one_decision_and_stays_valid():
    rng = random.Random(3)
    for _ in range(300):
        parent = MACRO.sample(rng)
        child = MACRO.mutate(parent, rng)
        MACRO.validate(child)
        assert child != parent
        a, b = MACRO.encode(parent), MACRO.encode(child)
        if a["layers.count"] == b["layers.count"]:
            assert sum(a[k] != b[k] for k in a) == 1
        else:
            assert abs(a["layers.count"] - b["layers.count"]) == 1


def test_grid_enumerates_each_architecture_once():
    grid = SMALL.grid()
    assert len(grid) == SMALL.size()
    assert len({arch_hash(a) for a in grid}) == len(grid)
    with pytest.raises(SpaceError, match="train.lr"):
        MACRO.grid()


def test_hash_is_stable_and_order_independent():
    arch = SMALL.grid()[5]
    reordered = dict(reversed(list(arch.items())))
    assert arch_hash(arch) == arch_hash(reordered)
    assert arch_hash(arch) != arch_hash(SMALL.grid()[6])


def test_decode_rejects_values_outside_the_space():
    flat = SMALL.encode(SMALL.grid()[0])
    with pytest.raises(SpaceError, match="layers.0.op"):
        SMALL.decode({**flat, "layers.0.op": "conv_9x9"})
    with pytest.raises(SpaceError, match="missing value for 'layers.count'"):
        SMALL.decode({})


def _spec(**layer) -> dict:
    block = {"op": {"choice": ["conv_3x3"]}, "channels": 16, "stride": 1, "connection": "series"}
    return {"name": "t", "space": {"layers": {"repeat": [1, 2], "block": {**block, **layer}}}}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (_spec(op={"choice": ["conv_3x3", "conv_9x9"]}),
         r"space\.layers\.block\.op: unknown op 'conv_9x9' \(did you mean 'conv_7x7'\?\)"),
        (_spec(op={"choice": []}), r"space\.layers\.block\.op: choice: empty list"),
        (_spec(channels={"int": [64, 16]}), r"space\.layers\.block\.channels: int: inverted range"),
        (_spec(channels={"choise": [16]}), r"unknown key 'choise'.*did you mean 'choice'"),
        (_spec(connection={"choice": ["skipp"]}), r"unknown connection 'skipp'"),
        (_spec(stride={"choice": ["two"]}), r"layers\.stride: must be positive integers"),
        ({"name": "t", "spac": {}}, r"unknown top-level key 'spac' \(did you mean 'space'\?\)"),
        ({"name": "t", "space": {"train": {"optimizer": {"choice": ["adamm"]}},
                                 **_spec()["space"]}}, r"unknown optimizer 'adamm'"),
    ],
)
def test_invalid_spaces_fail_at_load_naming_the_field(spec, message):
    with pytest.raises(SpaceError, match=message):
        load_space(spec)


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nspace:\n  layers: {repeat: [1, 2]\n  train: 1\n")
    with pytest.raises(SpaceError, match=r"bad\.yaml:\d+: malformed YAML"):
        load_space(path)


def test_yaml_file_with_exponent_floats_loads(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nspace:\n  layers:\n    repeat: [1, 3]\n    block:\n"
        "      op: {choice: [conv_3x3, zero]}\n      channels: {int: [8, 32], step: 8}\n"
        "      stride: 1\n      connection: {choice: [skip, dense]}\n"
        "  train:\n    lr: {float: [1e-4, 1e-2], log: true}\n"
    )
    space = load_space(path)
    assert space.name == "mine"
    assert space.domain("train.lr").low == pytest.approx(1e-4)
    arch = space.sample(random.Random(0))
    assert all(layer["channels"] in (8, 16, 24, 32) for layer in arch["layers"])


def test_unknown_space_name_suggests_builtin():
    with pytest.raises(SpaceError, match="did you mean 'macro_cnn'"):
        load_space("macro_cn")
