"""The NAS-with-RL controller (Zoph & Le 2017) as a Tune ``Searcher``: an LSTM policy emits the
space's decisions in order and is trained with REINFORCE on the trials' rewards.

Written by hand because no maintained library provides a REINFORCE NAS controller as a Tune
searcher; it is small (an ``LSTMCell`` and one linear head per decision) and runs on the driver.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from raynas.space import Arch, Decision, Space
from raynas.space.nodes import FloatRange
from raynas.strategies.base import SpaceSearcher, one_thread

FLOAT_BINS = 8  # a continuous decision becomes this many evenly (or log-evenly) spaced choices


def decision_options(decision: Decision) -> list[Any]:
    """The values the controller chooses among for one decision."""
    param = decision.param
    if isinstance(param, FloatRange):
        lo, hi = (math.log(param.low), math.log(param.high)) if param.log else (param.low,
                                                                                  param.high)
        points = [lo + (hi - lo) * i / (FLOAT_BINS - 1) for i in range(FLOAT_BINS)]
        return [min(param.high, max(param.low, math.exp(p) if param.log else p))
                for p in points]
    return param.options()


class Policy(nn.Module):
    """Autoregressive policy: step ``t`` reads the embedding of the previous action and emits
    logits over decision ``t``'s options. Inactive decisions (layers beyond the sampled count)
    are skipped, so the policy sees exactly the decisions an architecture makes."""

    def __init__(self, sizes: list[int], hidden: int = 32, tanh_constant: float = 2.5) -> None:
        super().__init__()
        self.tanh_constant = tanh_constant
        self.offsets = [0]
        for n in sizes:
            self.offsets.append(self.offsets[-1] + n)
        self.embed = nn.Embedding(self.offsets[-1] + 1, hidden)  # last index: the start token
        self.cell = nn.LSTMCell(hidden, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in sizes)

    def start(self) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        return self.embed.weight[-1:], None

    def step(self, t: int, x: torch.Tensor, state) -> tuple[torch.Tensor, Any]:
        h, c = self.cell(x, state)
        # Logits bounded by C*tanh (as in ENAS, Pham et al. 2018): the policy can grow
        # confident but never deterministic, so it keeps proposing new architectures.
        return self.tanh_constant * torch.tanh(self.heads[t](h)[0]), (h, c)

    def feed(self, t: int, action: int) -> torch.Tensor:
        return self.embed.weight[self.offsets[t] + action : self.offsets[t] + action + 1]


class ReinforceController(SpaceSearcher):
    """REINFORCE with a moving-average baseline and an entropy bonus; asynchronous, batched.

    Each finished trial adds ``(actions, reward - baseline)`` to a batch; once ``batch_size``
    have arrived the policy takes one Adam step on the batch (log-probabilities recomputed
    under the current policy), so trials may finish in any order and at any concurrency.
    Advantages are divided by a running standard deviation of the rewards, which makes one
    learning rate work for accuracies (differences of ~0.01) and other scales alike.
    """

    def __init__(self, space: Space, metric: str | None = None, mode: str | None = None, *,
                 batch_size: int = 4, lr: float = 0.02, entropy_weight: float = 0.01,
                 baseline_decay: float = 0.8, hidden: int = 32, seed: int = 0) -> None:
        super().__init__(space, metric, mode, seed)
        self.decisions = space.decisions()
        self.options = [decision_options(d) for d in self.decisions]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.policy = Policy([len(o) for o in self.options], hidden)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=lr)
        self.batch_size = batch_size
        self.entropy_weight = entropy_weight
        self.baseline_decay = baseline_decay
        self.baseline: float | None = None
        self.variance = 0.0
        self.actions: dict[str, list[tuple[int, int]]] = {}
        self.batch: list[tuple[list[tuple[int, int]], float]] = []
        self.num_updates = 0

    def propose(self) -> Arch:
        flat: dict[str, Any] = {}
        taken: list[tuple[int, int]] = []
        with torch.no_grad(), one_thread():
            x, state = self.policy.start()
            for t, decision in enumerate(self.decisions):
                if not decision.active(flat):
                    continue
                logits, state = self.policy.step(t, x, state)
                probs = torch.softmax(logits, 0).tolist()
                action = self.rng.choices(range(len(probs)), weights=probs)[0]
                flat[decision.key] = self.options[t][action]
                taken.append((t, action))
                x = self.policy.feed(t, action)
        self._last = taken
        return self.space.decode(flat)

    def suggest(self, trial_id: str) -> dict[str, Any]:
        config = super().suggest(trial_id)
        self.actions[trial_id] = self._last
        return config

    def forget(self, trial_id: str) -> None:
        self.actions.pop(trial_id, None)

    def adopt(self, trial_id: str, arch: Arch) -> None:
        """The actions that would have proposed ``arch`` (a float decision: its nearest
        option), so REINFORCE learns from an earlier result as from its own."""
        flat, taken = self.space.encode(arch), []
        for t, decision in enumerate(self.decisions):
            if decision.active(flat):
                options = self.options[t]
                value = flat[decision.key]
                taken.append((t, options.index(value) if value in options else min(
                    range(len(options)), key=lambda i: abs(options[i] - value))))
        self.actions[trial_id] = taken

    def learn(self, trial_id: str, arch: Arch, reward: float) -> None:
        if self.baseline is None:
            self.baseline = reward
        advantage = reward - self.baseline
        self.variance = (self.baseline_decay * self.variance
                         + (1 - self.baseline_decay) * advantage**2)
        self.baseline = (self.baseline_decay * self.baseline
                         + (1 - self.baseline_decay) * reward)
        scaled = advantage / (math.sqrt(self.variance) + 1e-8) if self.variance > 0 else 0.0
        self.batch.append((self.actions.pop(trial_id), scaled))
        if len(self.batch) >= self.batch_size:
            self._update()

    def _update(self) -> None:
        with one_thread():
            loss = torch.zeros(())
            for taken, advantage in self.batch:
                log_prob, entropy = self._replay(taken)
                loss = loss - advantage * log_prob - self.entropy_weight * entropy
            self.optimizer.zero_grad()
            (loss / len(self.batch)).backward()
            self.optimizer.step()
        self.batch = []
        self.num_updates += 1

    def _replay(self, taken: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability and entropy of a recorded action sequence under the current policy."""
        x, state = self.policy.start()
        log_prob = entropy = torch.zeros(())
        for t, action in taken:
            logits, state = self.policy.step(t, x, state)
            log_p = torch.log_softmax(logits, 0)
            log_prob = log_prob + log_p[action]
            entropy = entropy - (log_p.exp() * log_p).sum()
            x = self.policy.feed(t, action)
        return log_prob, entropy
