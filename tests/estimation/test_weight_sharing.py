"""Weight sharing: supernets (mixed ops), one-shot search against a trained supernet, DARTS.

The searches run for real on a local Ray and digits, with tiny cells so they stay fast."""

from __future__ import annotations

import json
import random

import mlflow
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from searches import child_runs

from raynas.config import Resources, SearchConfig
from raynas.errors import ConfigError
from raynas.estimation import load_space
from raynas.estimation.oneshot import fair_paths
from raynas.experiment.driver import search
from raynas.experiment.resolve import resolve
from raynas.models import build_model, describe
from raynas.models.cell import DARTS_OPS, NB201_EDGES, NB201_OPS, nb201_field, parse_genotype
from raynas.models.supernet import MixedOp, Supernet, skip_count
from raynas.space import Space, arch_hash

SMALL = {"nb201_cell": {"channels": 4}, "darts_cell": {"channels": 4, "layers": 3}}


def tiny(name: str) -> Space:
    """A built-in cell space at a few channels (and, for DARTS, 3 cells): fast on a CPU."""
    doc = load_space(name).document
    return load_space({**doc, "name": f"tiny_{name}", "space": {**doc["space"], **SMALL[name]}})


@pytest.fixture(autouse=True)
def one_thread():
    """As in a trial (one CPU, one thread): on a loaded 2-core machine, torch's default two
    threads make these many small convolutions ~20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_nb201(tracking, tmp_path) -> str:
    path = tmp_path / "tiny_nb201.yaml"
    path.write_text(yaml.safe_dump(tiny("nb201_cell").document))
    return str(path)




def test_mixed_op_with_one_hot_weights_is_that_op():
    torch.manual_seed(0)
    ops = {name: NB201_OPS[name](4, 4, 1) for name in NB201_OPS}
    mixed = MixedOp(ops).eval()
    x = torch.randn(2, 4, 5, 5)
    for k, op in enumerate(ops.values()):
        mixed.choice = torch.nn.functional.one_hot(torch.tensor(k), len(ops)).float()
        with torch.no_grad():
            assert torch.equal(mixed(x), op(x))
    mixed.choice = torch.full((len(ops),), 1 / len(ops))
    with torch.no_grad():  # a real mixture is none of them
        assert not torch.allclose(mixed(x), ops["nor_conv_3x3"](x))


@pytest.mark.parametrize("space_name", ["nb201_cell", "darts_cell"])
def test_supernet_one_hot_alpha_equals_the_single_path(space_name):
    space = tiny(space_name)
    net = Supernet(space, (1, 8, 8), 10).eval()
    arch = space.sample(random.Random(3))
    path = net.path_of(arch)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        for kind, alpha in net.alpha.items():  # softmax of -inf everywhere but the path: one-hot
            alpha.fill_(-float("inf"))
            alpha[range(len(path[kind])), path[kind]] = 0.0
        mixed = net.use(None)(x)
        single = net.use(arch)(x)
    assert torch.equal(mixed, single)
    if space.model == "nb201":  # (a DARTS cell may hold 'none', which derivation skips)
        assert net.derive() == arch  # the argmax of one-hot alpha


@pytest.mark.parametrize("space_name", ["nb201_cell", "darts_cell"])
def test_supernet_forward_backward_on_random_paths(space_name):
    space = tiny(space_name)
    net = Supernet(space, (1, 8, 8), 10)
    rng = random.Random(0)
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    for _ in range(3):
        arch = space.sample(rng)
        net.zero_grad()
        torch.nn.functional.cross_entropy(net.use(arch)(x), y).backward()
        grads = {name for name, p in net.named_parameters() if p.grad is not None
                 and p.grad.abs().sum() > 0}
        assert "net.stem.0.weight" in grads  # the shared weights learn from any path
        assert not any(g.startswith("alpha.") for g in grads)  # a single path has no alpha
    net.zero_grad()
    torch.nn.functional.cross_entropy(net.use(None)(x), y).backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in net.alpha.values())


def test_darts_derivation_from_hand_set_alpha():
    space = tiny("darts_cell")
    net = Supernet(space, (1, 8, 8), 10)
    ops = net.ops["normal"]
    assert ops == list(DARTS_OPS)
    wanted = {  # node: {input: op}; the other inputs get a weaker op, "none" is strongest
        2: {0: "sep_conv_3x3", 1: "skip_connect"},
        3: {0: "dil_conv_5x5", 2: "max_pool_3x3"},
        4: {1: "sep_conv_5x5", 3: "avg_pool_3x3"},
        5: {2: "skip_connect", 4: "dil_conv_3x3"},
    }
    with torch.no_grad():
        for kind in ("normal", "reduce"):
            alpha = net.alpha[kind]
            alpha.zero_()
            for row, (node, source) in enumerate(net.edges[kind]):
                alpha[row, ops.index("none")] = 9.0  # excluded from the derivation
                if source in wanted[node]:
                    alpha[row, ops.index(wanted[node][source])] = 5.0
                elif kind == "normal":
                    alpha[row, ops.index("sep_conv_5x5")] = 1.0  # weaker than the wanted
    arch = net.derive()
    genotype = describe(space, arch)
    expected = ("[('sep_conv_3x3', 0), ('skip_connect', 1), ('dil_conv_5x5', 0), "
                "('max_pool_3x3', 2), ('sep_conv_5x5', 1), ('avg_pool_3x3', 3), "
                "('skip_connect', 2), ('dil_conv_3x3', 4)]")
    assert genotype == f"Genotype(normal={expected}, normal_concat=[2, 3, 4, 5], " \
                       f"reduce={expected}, reduce_concat=[2, 3, 4, 5])"
    assert parse_genotype(genotype).normal[6] == ("skip_connect", 2)
    assert skip_count(arch, space) == 2


def test_nb201_derivation_is_the_argmax_op_of_every_edge():
    space = tiny("nb201_cell")
    net = Supernet(space, (1, 8, 8), 10)
    cell = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
    ops = net.ops["cell"]
    with torch.no_grad():
        net.alpha["cell"].zero_()
        for row, op in enumerate(["nor_conv_3x3", "none", "skip_connect", "avg_pool_3x3",
                                  "nor_conv_1x1", "none"]):
            net.alpha["cell"][row, ops.index(op)] = 2.0
    assert describe(space, net.derive()) == cell


def test_weight_sharing_needs_a_cell_space_and_known_names():
    with pytest.raises(ConfigError, match="--space macro_cnn: weight sharing needs a cell"):
        resolve(SearchConfig(strategy="oneshot", space="macro_cnn"))
    with pytest.raises(ConfigError, match="--strategy-option supernet: unknown sampler 'spso'"):
        resolve(SearchConfig(strategy="oneshot", space="nb201_cell",
                             strategy_options={"supernet": "spso"}))
    with pytest.raises(ConfigError, match="--strategy-option searcher: 'darts' cannot search"):
        resolve(SearchConfig(strategy="oneshot", space="nb201_cell",
                             strategy_options={"searcher": "darts"}))
    for extra in ({"objective": ["val_accuracy:max", "params:min"]},
                  {"constraint": ["params<=10000"]}):
        with pytest.raises(ConfigError, match="--strategy darts: scores candidates by the "
                                              "shared weights' validation accuracy alone"):
            resolve(SearchConfig(strategy="darts", space="nb201_cell", **extra))


def test_oneshot_search_ranks_candidates_against_the_supernet(ray_local, tracking, tiny_nb201):
    result = search(SearchConfig(space=tiny_nb201, strategy="oneshot", scheduler="fifo",
                                 num_trials=5, max_epochs=1, retrain_epochs=1, seed=0,
                                 resources=Resources(concurrency=1)))
    client = MlflowClient(tracking)
    supernet, = child_runs(client, result, "supernet")
    assert supernet.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(supernet.info.run_id,
                                                       "train_loss")] == [1]
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["raynas.supernet"] == "spos"
    assert parent.data.tags["raynas.supernet_checkpoint"]
    candidates = child_runs(client, result, "trial")
    assert len(candidates) == result.num_trials == 5
    scores = {r.data.tags["raynas.arch_hash"]: r.data.metrics["val_accuracy"]
              for r in candidates}
    assert len(set(scores.values())) > 1  # inherited weights tell the candidates apart
    # the best-scored candidate is the one retrained from scratch
    assert scores[result.best["arch_hash"]] == max(scores.values())
    assert result.best["val_accuracy"] == pytest.approx(max(scores.values()))
    final, = child_runs(client, result, "final")
    assert final.data.tags["raynas.arch_hash"] == result.best["arch_hash"]
    assert final.data.metrics["test_accuracy"] == pytest.approx(result.best["test_accuracy"])


def test_darts_run_logs_alpha_and_a_valid_genotype(ray_local, tracking, tiny_nb201):
    result = search(SearchConfig(space=tiny_nb201, strategy="darts", scheduler="fifo",
                                 num_trials=1, max_epochs=2, retrain_epochs=1, seed=0))
    space = load_space(tiny_nb201)
    client = MlflowClient(tracking)
    trial, = child_runs(client, result, "trial")
    assert {"darts.arch_lr", "darts.order", "darts.weight_lr", "darts.seed"} <= set(
        trial.data.params)
    for metric in ("alpha/cell/3_2/nor_conv_3x3", "val_accuracy", "train_loss", "skip_count"):
        history = client.get_metric_history(trial.info.run_id, metric)
        assert [m.step for m in history] == [1, 2]
    alpha = client.get_metric_history(trial.info.run_id, "alpha/cell/3_2/nor_conv_3x3")
    assert alpha[0].value != alpha[1].value  # alpha is trained: softmax(alpha) moves
    artifacts = {a.path for a in client.list_artifacts(trial.info.run_id)}
    assert {"alpha_epoch001.png", "alpha_epoch002.png", "architecture.json"} <= artifacts
    arch = json.loads(mlflow.artifacts.load_text(
        f"runs:/{trial.info.run_id}/architecture.json"))
    assert space.validate(arch) == arch  # a valid architecture of the space
    # the genotype is softmax(alpha)'s argmax on every edge: the last epoch's, unless that one
    # collapsed (more than max_skip=2 skips) and the previous epoch's genotype was kept
    derived = {nb201_field(j, i): max(NB201_OPS, key=lambda op, e=f"{j}_{i}":
                                      trial.data.metrics[f"alpha/cell/{e}/{op}"])
               for j, i in NB201_EDGES}
    skips = sum(op == "skip_connect" for op in derived.values())
    assert trial.data.metrics["skip_count"] == skips
    if skips <= 2:
        assert arch["cell"] == derived
    assert trial.data.tags["raynas.genotype"] == describe(space, arch)
    build_model(space, arch, (1, 8, 8), 10)
    assert result.best["arch"] == arch and result.best["arch_hash"] == arch_hash(arch)
    final, = child_runs(client, result, "final")
    assert final.data.tags["raynas.arch_hash"] == arch_hash(arch)


def test_fair_paths_use_every_op_of_every_edge_once_and_keep_the_fixed_ones():
    space = tiny("nb201_cell")
    paths = fair_paths(space, random.Random(0), {})
    assert len(paths) == len(NB201_OPS)
    for j, i in NB201_EDGES:
        assert sorted(p["cell"][nb201_field(j, i)] for p in paths) == sorted(NB201_OPS)
    split = fair_paths(space, random.Random(1), {"cell.edge_1_0": "nor_conv_1x1"})
    assert {p["cell"]["edge_1_0"] for p in split} == {"nor_conv_1x1"}
    assert sorted(p["cell"]["edge_3_2"] for p in split) == sorted(NB201_OPS)
