"""Cost objectives of an architecture, measured on the built model; constraints on them."""

from __future__ import annotations

import math
import statistics
import time

import torch
from torch import nn
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import (
    FlopCounterMode,
    flop_registry,
    register_flop_formula,
    sdpa_flop_count,
)

aten = torch.ops.aten


def _register_cpu_kernels() -> None:
    """FLOP formulas for the CPU kernels PyTorch's counter does not know (it would count 0):
    ``scaled_dot_product_attention``'s CPU flash kernel (the formula of its CUDA ones) and
    oneDNN's LSTM layer (2 per multiply-add of both weight matrices, at every step). A later
    PyTorch that counts them itself keeps its own formula."""
    if aten._scaled_dot_product_flash_attention_for_cpu not in flop_registry:
        @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
        def sdpa_cpu(query_shape, key_shape, value_shape, *args, out_shape=None,
                     **kwargs) -> int:
            return sdpa_flop_count(query_shape, key_shape, value_shape)

    if aten.mkldnn_rnn_layer not in flop_registry:
        @register_flop_formula(aten.mkldnn_rnn_layer)
        def lstm_layer(input_shape, w_ih_shape, w_hh_shape, *args, out_shape=None,
                       **kwargs) -> int:
            rows = math.prod(input_shape) // input_shape[-1]  # steps x batch
            return 2 * rows * (math.prod(w_ih_shape) + math.prod(w_hh_shape))


_register_cpu_kernels()


def count_params(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def device_of(model: nn.Module) -> torch.device:
    """Where the model's weights are (CPU for a module without any, e.g. a pooling op)."""
    return next(model.parameters(), torch.zeros(())).device


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs for one sample (PyTorch's counter: 2 per multiply-add)."""
    device = device_of(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def measure_latency(model: nn.Module, input_shape: tuple[int, ...], batch: int = 1,
                    repeats: int = 21, budget_s: float = 0.1) -> float:
    """Median milliseconds of one forward pass of ``batch`` samples in eval mode, on the
    model's device, with the threads torch uses now.

    A few warm-up calls, then ``repeats`` blocks of calls (fewer for a slow model, to stay
    near ``budget_s``, but at least 5), each ~0.5 ms long so the clock's overhead is small;
    the latency is the median block's time per call. Short blocks matter on a shared machine:
    most fit between two preemptions, so the median is not moved by the slow ones (measured
    at load 20 on 2 cores: 2 ms blocks read 400-640 us for a 75 us network, 0.5 ms blocks
    78-95 us). The clock is ``torch.utils.benchmark``'s, which synchronises CUDA."""
    # Not at the top: torch.utils.benchmark imports cpp_extension, which warns on stderr where
    # CUDA_HOME has no runtime - and the CLI's errors must stay one line.
    from torch.utils.benchmark.utils.timer import timer as clock

    device = device_of(model)
    x = torch.zeros(batch, *input_shape, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for _ in range(3):
                model(x)
            start = clock()
            model(x)
            per_call = max(clock() - start, 1e-7)
            number = max(1, round(5e-4 / per_call))
            blocks = max(5, min(repeats, int(budget_s / (number * per_call))))
            times = []
            for _ in range(blocks):
                start = clock()
                for _ in range(number):
                    model(x)
                times.append((clock() - start) / number)
    finally:
        model.train(was_training)
    return statistics.median(times) * 1e3


def peak_memory_mb(model: nn.Module, input_shape: tuple[int, ...], batch: int) -> float:
    """Memory (MiB) of the forward pass of a training step on one batch: the weights plus the
    activations autograd keeps for the backward pass (gradients and optimizer state, another
    1-3x the weights, are not counted).

    On CUDA it is measured: ``torch.cuda.max_memory_allocated`` during the forward pass, less
    what was allocated before it, plus the weights. The CPU allocator keeps no such statistic,
    so there it is counted: every distinct tensor autograd saves for backward
    (``saved_tensors_hooks``) that is not a parameter, plus the output and the input, plus the
    parameters and buffers. Eval mode, so BatchNorm's running statistics stay untouched."""
    device = device_of(model)
    weights = sum(t.nelement() * t.element_size()
                  for t in (*model.parameters(), *model.buffers()))
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(batch, *input_shape, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            with torch.enable_grad():
                out = model(x)
            torch.cuda.synchronize(device)
            activations = torch.cuda.max_memory_allocated(device) - before
        else:
            skip = {p.untyped_storage().data_ptr() for p in model.parameters()}
            saved: dict[int, int] = {}

            def pack(t: torch.Tensor) -> torch.Tensor:
                storage = t.untyped_storage()
                if storage.data_ptr() not in skip:
                    saved[storage.data_ptr()] = storage.nbytes()
                return t

            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out = model(x)
            # the output: a tensor, or a detector's boxes, scores and labels per image
            for t in (x, *(t for t in tree_leaves(out) if isinstance(t, torch.Tensor))):
                saved.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
            activations = sum(saved.values())
        del out
    finally:
        model.train(was_training)
    return (weights + activations) / 2**20










def train_seconds_per_sample(model: nn.Module, input_shape: tuple[int, ...], batch: int,
                             steps: int = 2) -> float | None:
    """Median seconds per sample of a training step (forward, backward, an SGD update) on
    ``batch`` zero inputs, after one warm-up step; None for a model whose training output is
    not one tensor (a detector's losses: it trains by its own loop).

    The budget planner predicts an epoch from this (``raynas.experiment.budget``): a timed
    step is what the candidate costs on this machine, where FLOPs alone miss depthwise and
    memory-bound layers by several times on a CPU. Give it a model of its own: the weights
    stay (a zero learning rate), BatchNorm's running statistics do not."""
    device = device_of(model)
    x = torch.zeros(batch, *input_shape, device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    was_training = model.training
    model.train()
    times = []
    try:
        for _ in range(steps + 1):
            start = time.perf_counter()
            out = model(x)
            if not isinstance(out, torch.Tensor):
                return None
            opt.zero_grad(set_to_none=True)
            out.float().square().mean().backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return statistics.median(times[1:]) / batch
