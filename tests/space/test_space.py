"""The search-space model: loading, validation, and the Tune / Optuna / decision adapters."""

from __future__ import annotations

import math
import random

import optuna
import pytest

from raynas.errors import SpaceError
from raynas.estimation import load_space
from raynas.space import arch_hash, builtin_spaces

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


# --- regressions found by fuzzing the loader (tests/space/test_fuzz.py) ---------------------------
def _with(**fields) -> dict:
    """The minimal valid space of ``_spec`` with extra top-level fields under ``space``."""
    spec = _spec()
    spec["space"].update(fields)
    return spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        # OverflowError: int too large to convert to float
        (_with(x={"float": [0, 10**400]}), r"^t: space\.x: float: integer bounds must be within"),
        (_with(x={"int": [0, 10**400]}), r"^t: space\.x: int: bounds must be integers within"),
        # MemoryError / hang: listing 10**15 values, collecting 10**9 copies of a block
        (_with(x={"int": [0, 2**60]}), r"^t: space\.x: int: bounds must be integers within"),
        (_with(x={"int": [0, 10**15]}), r"^t: space\.x: int: \[0, 10+\] has 10+1 values, more "
                                        r"than 1000000 \(give a step or use a float range\)"),
        (_with(x={"repeat": [0, 10**9], "block": {"a": {"choice": [1, 2]}}}),
         r"^t: space\.x: repeat: 1000000000 copies of the block make 1000000001 decisions"),
        (_with(**{f"x{i}": {"repeat": [0, 3000], "block": 1} for i in range(4)}),
         r"^t: space: its largest architecture has 120\d\d decisions and constants, more "
         r"than 10000"),
        # nan never equals itself: a sampled architecture failed validate()
        (_with(x={"choice": [float("nan")]}), r"^t: space\.x: choice: a value must be a finite"),
        (_with(x=float("nan")), r"^t: space\.x: a constant must be a finite number, got nan"),
        (_with(x=float("inf")), r"^t: space\.x: a constant must be a finite number, got inf"),
        # 1 and '1' were both field '1': validate() of a sample failed
        (_with(x={1: 1, "1": 2}), r"^t: space\.x: field name 1 must be a string"),
        # 'layers.count' collided with the layer count's flat key
        (_with(**{"layers.count": {"choice": [1, 2]}}), r"^t: space: invalid field name "
                                                        r"'layers\.count'"),
        (_with(x={"": 1}), r"^t: space\.x: invalid field name ''"),
        # a newline in a key or name made the error two lines
        (_with(x={"a\nb": 1}), r"^t: space\.x: invalid field name 'a\\nb'"),
        ({**_spec(), "name": "a\nb"}, r"^<dict>: name: must be a one-line string, got 'a\\nb'"),
        ({**_spec(), "name": ["t"]}, r"^<dict>: name: must be a one-line string, got \['t'\]"),
        # the sum overflowed: tune.uniform sampled inf, outside the range
        (_with(x={"float": [-1e308, 1e308]}), r"^t: space\.x: float: range .* is too wide"),
        # Optuna's suggest_int raised ValueError: step and log together
        (_with(x={"int": [1, 10], "step": 2, "log": True}), r"^t: space\.x: int: a log range "
                                                             r"cannot have a step"),
        # ValueError: Exceeds the limit (4300 digits) for integer string conversion
        ({**_spec(), "model": 10**5000}, r"^t: model: must be a string, got <int too large"),
        ({**_spec(), "description": ["x"]}, r"^t: description: must be a string, got \['x'\]"),
        # str() of a 5000-digit key raised ValueError in the message and in did_you_mean
        ({**_spec(), 10**5000: 1}, r"^t: unknown top-level key <int too large to show>$"),
        (_with(x={"int": [1, 2], 10**5000: 1}), r"^t: space\.x: unknown key <int too large to "
                                                r"show> for a int$"),
        # loaded, then failed in the training loop
        (_with(train=5), r"^t: space\.train: must be a mapping of training hyperparameters"),
        (_with(train={"lr": "fast"}), r"^t: space\.train\.lr: must be positive numbers"),
        (_with(train={"lr": {"float": [0.0, 0.1]}}), r"^t: space\.train\.lr: must be positive"),
        (_with(train={"weight_decay": {"choice": [-0.5, 0]}}),
         r"^t: space\.train\.weight_decay: must be numbers >= 0"),
        (_with(train={"optimizer": {"float": [0, 1]}}),
         r"^t: space\.train\.optimizer: must be a constant or a choice"),
        (_with(train={"batch_size": {"x": 64}}),
         r"^t: space\.train\.batch_size: must be positive integers"),
    ],
)
def test_fuzzed_spaces_fail_with_one_line_naming_the_field(spec, message):
    with pytest.raises(SpaceError, match=message) as info:
        load_space(spec)
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: !!timestamp x\n", r"malformed YAML: a value cannot be constructed \(AttributeError"),
        ("a: 2024-13-45\n", r"malformed YAML: .*month must be in 1\.\.12"),
        (f"a: {'9' * 5000}\n", r"malformed YAML: .*Exceeds the limit"),
        ("[" * 5000, r"malformed YAML: nested too deeply"),
        ("name: t\nspace: &x {a: *x}\n", r"space\.a\.a\..*: nested more than 50 levels deep"),
    ],
    ids=["bad-timestamp", "bad-date", "5000-digit-int", "deep-nesting", "recursive-alias"],
)
def test_fuzzed_yaml_files_fail_with_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError, match=message) as info:
        load_space(path)
    assert str(info.value).startswith(str(path)) and len(str(info.value).splitlines()) == 1


def test_binary_file_is_a_space_error_naming_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"name: t\n\xff\xfe")  # was UnicodeDecodeError
    with pytest.raises(SpaceError, match=r"bad\.yaml: not a UTF-8 text file \(byte 8\)"):
        load_space(path)


def test_int_range_with_offset_step_samples_its_own_values_in_tune():
    # tune.qrandint quantizes to multiples of the step: 4, 6, 8, 10 are not in [3, 10] step 2
    space = load_space(_with(x={"int": [3, 10], "step": 2}, y={"int": [4, 10], "step": 2}))
    domains = space.to_tune()
    for seed in range(30):
        arch = space.decode({k: d.sample(random_state=seed) for k, d in domains.items()})
        assert arch["x"] in (3, 5, 7, 9) and arch["y"] in (4, 6, 8, 10)


def test_tune_log_uniform_rounding_at_a_bound_decodes():
    # Tune samples exp(log(3.0)) == 3.0000000000000004 from loguniform(3.0, 3.0)
    space = load_space(_with(x={"float": [3.0, 3.0], "log": True}))
    domains = space.to_tune()
    flat = {k: d.sample(random_state=0) for k, d in domains.items()}
    assert space.decode(flat)["x"] == 3.0
    with pytest.raises(SpaceError, match=r"t: x: value 3\.001 is not in"):
        space.decode({**flat, "x": 3.001})
    inside = load_space(_with(x={"float": [1.0, 2.0]}))  # only values outside a bound move
    flat = inside.encode(inside.sample(random.Random(0)))
    assert inside.decode({**flat, "x": 1.0000000000000002})["x"] == 1.0000000000000002


def test_mutate_a_wide_log_float_range_stays_finite():
    # a Gaussian step in log space made math.exp overflow (OverflowError)
    space = load_space(_with(x={"float": [1e-300, 1.7e308], "log": True}))
    rng = random.Random(0)
    top = {**space.sample(rng), "x": 1.7e308}  # from here, any step up overflowed
    for _ in range(20):
        space.validate(space.mutate(top, rng))


def test_mutate_a_choice_between_equal_values_of_different_types():
    # 1 == True: filtering "the other values" by == left nothing to choose (IndexError)
    space = load_space(_with(x={"choice": [1, True]}, y={"float": [2.0, 2.0]}))
    arch = space.sample(random.Random(0))
    for seed in range(20):
        child = space.mutate(arch, random.Random(seed))
        space.validate(child)
        if child["layers"] == arch["layers"]:
            assert type(child["x"]) is not type(arch["x"])


def test_astronomical_space_size_is_infinite_not_an_overflow():
    # size() was a 3000-digit int: repr(space) and grid() raised OverflowError formatting it
    space = load_space(_with(x={"repeat": [0, 1000], "block": {"int": [1, 1000]}}))
    assert space.size() == math.inf
    assert "inf" in repr(space)
    with pytest.raises(SpaceError, match="more than the 10 a grid may enumerate"):
        space.grid(limit=10)
    space.validate(space.sample(random.Random(0)))
