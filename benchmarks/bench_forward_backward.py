"""Forward + backward of kfac_ref against PyTorch and against the machine's matrix-product rate.

What is timed is one training step's gradient work,

    kfac_ref.loss_and_grad(model, loss_fn, x, y)

i.e. forward, averaged cross-entropy loss and backward to every parameter gradient, for

    digits    kfac_ref.models.convnet()                                          x : (N, 1, 8, 8)
    mnist     kfac_ref.models.convnet(in_shape=(1, 28, 28))  (compare's ConvNet)  x : (N, 1, 28, 28)
    cifar     kfac_ref.models.convnet(in_shape=(3, 32, 32), channels=(16, 32), hidden=64)
                                                                                 x : (N, 3, 32, 32)
    mlp       kfac_ref.models.mlp(784, hidden=(256, 256))                        x : (N, 784)

and, named with ``--models`` (or ``--models all``), five more that exercise other layers:

    lenet     LeNet-5: Conv 5×5 (padding 2) → tanh → AvgPool 2 → Conv 5×5 → tanh → AvgPool 2 → 120 → 84 → 10
    strided   Conv 3×3 stride 2 (16, 32 channels), no pooling                    x : (N, 1, 28, 28)
    overlap   Conv 3×3 → ReLU → MaxPool 3×3 stride 2 padding 1, twice (16, 32)   x : (N, 3, 32, 32)
    sigmoid   compare's ConvNet with sigmoids                                      x : (N, 1, 28, 28)
    wide      the CIFAR-shaped ConvNet twice as wide (32, 64 channels, 128 hidden)

in float32 and float64, at batch sizes N = 128 and 1,024 (``--batches``) and with 1 and 2
threads (``--threads``), all in one run.  Two yardsticks:

- PyTorch, when ``import torch`` works (it is never a dependency of kfac_ref): the same
  architecture with kfac_ref's weights copied in, ``forward + loss.backward()`` on the same
  batch in the same dtype, with ``torch.set_num_threads`` equal to NumPy's BLAS threads.
  Repetitions alternate (kfac_ref, torch, kfac_ref, torch, ...) after a warm-up, so both see
  the same machine state; the table reports medians and their ratio.  The gradients are
  compared once, so the comparison is between two computations of the same numbers.
- the machine: the rate of a 1536 × 1536 matrix product (GFLOP/s, the best of a few) in the
  same dtype and thread count, measured in the same run; a step's achieved rate counts the
  flops of its matrix products (forward s = W̄ā, ∂ℓ/∂W̄ = Σ g āᵀ, and ∂ℓ/∂a = Wᵀ g for every
  parameter layer but the first), 2·N·T·d_out·a_dim each.

Where a gap to PyTorch lies (CPU, when torch is importable), two more contestants in the same
interleaved repetitions:

- PyTorch with oneDNN switched off (``torch.backends.mkldnn.enabled = False``, ConvNets only):
  its convolutions then run as im2col + matrix products, kfac_ref's algorithm.  With oneDNN
  on, float32 convolutions run in JIT-compiled direct-convolution kernels instead.
- the step's matrix products alone (:func:`step_products`, the same shapes and operands) through
  NumPy's BLAS and through ``torch.mm``: "BLAS ×" is their ratio, and "floor" NumPy's products
  over PyTorch's whole step, the ratio kfac_ref would reach if its products were all it did.

Goals: kfac_ref / torch ≤ 1.0 at N ≥ 1,024 and ≤ 1.3 at smaller N; the ConvNets at ≥ 25% of the
matrix-product rate at N ≥ 1,024.

Both cores (``--split``): at T > 1 threads, a third contestant times kfac_ref with the batch split
into T blocks of samples on T Python threads (``model.workers = T``, kfac_ref.backprop) and BLAS
at one thread, in the same interleaved repetitions; the table gives its ms, its ratio to torch and
its gain over the same step at one thread (a fourth contestant, also interleaved) and over the
T-thread-BLAS kfac_ref of the same row.

    python benchmarks/bench_forward_backward.py                 # the full table (a few minutes)
    python benchmarks/bench_forward_backward.py --quick         # a smoke run
    python benchmarks/bench_forward_backward.py --models cifar --batches 1024 --threads 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

try:
    import resource  # Unix only: kernel (system) CPU time, mostly page faults here
except ImportError:  # pragma: no cover - Windows
    resource = None

import numpy as np
from common import limit_blas_threads, tune_malloc  # noqa: E402  (benchmarks/common.py)
from threadpoolctl import ThreadpoolController, threadpool_info

import kfac_ref
from kfac_ref import nn
from kfac_ref.backend import synchronize, to_device, to_numpy, xp_for
from kfac_ref.models import convnet, mlp

try:  # PyTorch is only a yardstick here, never a dependency of the package.
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

NUM_CLASSES = 10

# name → (builder(dtype, device), per-sample input shape, is a ConvNet)
MODELS = {
    "digits": (lambda dtype, device: convnet(dtype=dtype, device=device), (1, 8, 8), True),
    "mnist": (lambda dtype, device: convnet(in_shape=(1, 28, 28), dtype=dtype, device=device), (1, 28, 28), True),
    "cifar": (
        lambda dtype, device: convnet(in_shape=(3, 32, 32), channels=(16, 32), hidden=64, dtype=dtype, device=device),
        (3, 32, 32),
        True,
    ),
    "mlp": (lambda dtype, device: mlp(784, hidden=(256, 256), dtype=dtype, device=device), (784,), False),
}
DEFAULT_MODELS = tuple(MODELS)  # the four nets of the default run; the ones below are named with --models


def _net(layers):
    """A builder: the Sequential of the layers ``layers()`` makes afresh (seed 0)."""
    return lambda dtype, device: nn.Sequential(*layers(), seed=0).astype(dtype).to(device)


MODELS.update(  # networks beyond the four: other layers, strides and activations (docs/benchmarks.md)
    {
        "lenet": (  # LeNet-5: 5×5 kernels, tanh, average pooling
            _net(
                lambda: [
                    nn.Conv2d(1, 6, 5, padding=2),
                    nn.Tanh(),
                    nn.AvgPool2d(2),
                    nn.Conv2d(6, 16, 5),
                    nn.Tanh(),
                    nn.AvgPool2d(2),
                    nn.Flatten(),
                    nn.Linear(400, 120),
                    nn.Tanh(),
                    nn.Linear(120, 84),
                    nn.Tanh(),
                    nn.Linear(84, 10),
                ]
            ),
            (1, 28, 28),
            True,
        ),
        "strided": (  # stride-2 convolutions instead of pooling
            _net(
                lambda: [
                    nn.Conv2d(1, 16, 3, stride=2, padding=1),
                    nn.ReLU(),
                    nn.Conv2d(16, 32, 3, stride=2, padding=1),
                    nn.ReLU(),
                    nn.Flatten(),
                    nn.Linear(32 * 7 * 7, 10),
                ]
            ),
            (1, 28, 28),
            True,
        ),
        "overlap": (  # overlapping 3×3 max-pooling with stride 2 and padding 1
            _net(
                lambda: [
                    nn.Conv2d(3, 16, 3, padding=1),
                    nn.ReLU(),
                    nn.MaxPool2d(3, stride=2, padding=1),
                    nn.Conv2d(16, 32, 3, padding=1),
                    nn.ReLU(),
                    nn.MaxPool2d(3, stride=2, padding=1),
                    nn.Flatten(),
                    nn.Linear(32 * 8 * 8, 10),
                ]
            ),
            (3, 32, 32),
            True,
        ),
        "sigmoid": (  # compare's ConvNet with sigmoids
            lambda dtype, device: convnet(in_shape=(1, 28, 28), activation="sigmoid", dtype=dtype, device=device),
            (1, 28, 28),
            True,
        ),
        "wide": (  # the CIFAR-shaped ConvNet, twice as wide
            lambda dtype, device: convnet(
                in_shape=(3, 32, 32), channels=(32, 64), hidden=128, dtype=dtype, device=device
            ),
            (3, 32, 32),
            True,
        ),
    }
)
DTYPES = {"float32": np.float32, "float64": np.float64}


# ---- process set-up --------------------------------------------------------------------
def system_seconds() -> float:
    """Kernel CPU time of this process so far (0 where the platform does not say)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime if resource is not None else 0.0


# ---- the torch twin --------------------------------------------------------------------
def torch_twin(model, dtype, device: str):
    """The same network in torch, with kfac_ref's weights copied in."""
    tnn, tdtype = torch.nn, getattr(torch, np.dtype(dtype).name)
    layers = []
    for layer in model.layers:
        if isinstance(layer, nn.Linear):
            t = tnn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        elif isinstance(layer, nn.Conv2d):
            t = tnn.Conv2d(
                layer.in_channels,
                layer.out_channels,
                layer.kernel_size,
                stride=layer.stride,
                padding=layer.padding,
                bias=layer.bias is not None,
            )
        elif isinstance(layer, nn.MaxPool2d):
            t = tnn.MaxPool2d(layer.kernel_size, stride=layer.stride, padding=layer.padding)
        elif isinstance(layer, nn.AvgPool2d):
            t = tnn.AvgPool2d(layer.kernel_size, stride=layer.stride, padding=layer.padding)
        elif isinstance(layer, (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Flatten)):
            t = getattr(tnn, type(layer).__name__)()
        else:
            raise TypeError(f"no torch twin for {layer!r}")
        t = t.to(device=device, dtype=tdtype)  # cast first, then copy: no rounding of the weights
        with torch.no_grad():
            for name, value in layer.params():
                getattr(t, name).copy_(torch.from_numpy(to_numpy(value).copy()))
        layers.append(t)
    return tnn.Sequential(*layers)


def torch_flat_grad(tmodel):
    """The torch gradient in kfac_ref's θ order (per layer: weight raveled, then bias)."""
    return np.concatenate([p.grad.detach().cpu().numpy().ravel() for p in tmodel.parameters()])


# ---- timing ----------------------------------------------------------------------------
def time_once(step, sync) -> float:
    """Wall-clock seconds of one call, with the device drained before each clock reading."""
    sync()
    t0 = time.perf_counter()
    step()
    sync()
    return time.perf_counter() - t0


def step_products(model, in_shape, n: int) -> list:
    """The (m, k, p) shapes, (m, k) × (k, p), of one step's matrix products, as kfac_ref orients them:
    forward s = W̄ā, ∂ℓ/∂W̄ = Σ g āᵀ and (after the first layer) ∂ℓ/∂a = Wᵀ g, per parameter layer."""
    shapes, shape, first = [], tuple(in_shape), True
    for layer in model.layers:
        out = layer.output_shape(shape)
        if isinstance(layer, nn.ParamLayer):
            d_out, a_dim = layer.d_out, layer.a_dim
            if layer.kind == "conv":  # over all N·T locations (nn/layout.py)
                nt = n * out[1] * out[2]
                shapes += [(d_out, a_dim, nt), (a_dim, nt, d_out)] + ([] if first else [(layer.d_in, d_out, nt)])
            else:  # rows are samples
                shapes += [(n, layer.d_in, d_out), (d_out, n, a_dim)] + ([] if first else [(n, d_out, layer.d_in)])
            first = False
        shape = out
    return shapes


def step_flops(model, in_shape, n: int) -> int:
    """Flops of one step's matrix products (:func:`step_products`), 2·m·k·p each."""
    return sum(2 * m * k * p for m, k, p in step_products(model, in_shape, n))


def product_steps(shapes, dtype, rng):
    """(step, sync) pairs that run the given products, (m, k) × (k, p) each, with NumPy's BLAS and with
    torch.mm on the same operands: the matrix-product floor of a step in either library."""
    operands = [
        (rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, p)).astype(dtype), np.empty((m, p), dtype))
        for m, k, p in shapes
    ]
    t_operands = [tuple(torch.from_numpy(v) for v in ops) for ops in operands]

    def numpy_products():
        for a, b, out in operands:
            np.matmul(a, b, out=out)

    def torch_products():
        for a, b, out in t_operands:
            torch.mm(a, b, out=out)

    return (numpy_products, lambda: None), (torch_products, lambda: None)


def matmul_rate(dtype, device: str, size: int = 1536, reps: int = 5) -> float:
    """GFLOP/s of a size × size matrix product (the best of ``reps``), with the current thread limit."""
    xp = xp_for(device)
    a = xp.asarray(np.random.default_rng(0).standard_normal((size, size)), dtype=dtype)
    b = a.T.copy()
    best = min(time_once(lambda: a @ b, lambda: synchronize(xp)) for _ in range(reps + 1))
    return 2 * size**3 / best / 1e9


def bench_case(name, dtype_name, n, threads, rate, args, use_torch):
    build, in_shape, is_conv = MODELS[name]
    dtype = DTYPES[dtype_name]
    xp = xp_for(args.device)
    rng = np.random.default_rng(0)
    model = build(dtype, args.device)
    loss_fn = nn.CrossEntropyLoss()
    x_np = rng.standard_normal((n, *in_shape)).astype(dtype)  # (N, *in_shape)
    y_np = rng.integers(0, NUM_CLASSES, size=n)  # (N,)
    x, y = to_device(x_np, args.device), to_device(y_np, args.device)

    row = {
        "model": name,
        "dtype": dtype_name,
        "batch": n,
        "threads": threads,
        "params": model.num_params,
        "conv": is_conv,
        "gflop": step_flops(model, in_shape, n) / 1e9,
        "matmul_gflops": rate,
        "goal_ratio": 1.0 if n >= 1024 else 1.3,
        "goal_fraction": 0.25 if is_conv and n >= 1024 else None,
    }

    def kfac_step():
        return kfac_ref.loss_and_grad(model, loss_fn, x, y)

    steps = {"kfac_ref": (kfac_step, lambda: synchronize(xp))}
    if args.split and threads > 1 and args.device == "cpu":
        split_model = build(dtype, args.device)
        split_model.workers = threads
        one_blas = ThreadpoolController()

        def split_step():  # T blocks of samples on T threads, each calling a one-thread BLAS
            with one_blas.limit(limits=1, user_api="blas"):
                return kfac_ref.loss_and_grad(split_model, loss_fn, x, y)

        def one_step():  # the same model at one thread: what the second core is measured against
            with one_blas.limit(limits=1, user_api="blas"):
                return kfac_ref.loss_and_grad(model, loss_fn, x, y)

        steps["split"] = (split_step, lambda: None)
        steps["one"] = (one_step, lambda: None)
        row["split_grad_rel_err"] = float(  # against the unsplit pass: rounding only
            np.linalg.norm(to_numpy(split_step().grad - kfac_step().grad)) / np.linalg.norm(to_numpy(kfac_step().grad))
        )

    if use_torch:
        tdev = "cuda" if args.device == "gpu" else "cpu"
        tmodel = torch_twin(model, dtype, tdev)
        tx, ty = torch.from_numpy(x_np).to(tdev), torch.from_numpy(y_np).to(tdev)
        tloss = torch.nn.CrossEntropyLoss()  # the mean over the batch, like kfac_ref's h

        def torch_step():
            for p in tmodel.parameters():
                p.grad = None  # a fresh gradient each step, as kfac_ref computes
            loss = tloss(tmodel(tx), ty)
            loss.backward()
            return loss.detach()

        tsync = torch.cuda.synchronize if tdev == "cuda" else (lambda: None)
        steps["torch"] = (torch_step, tsync)
        if tdev == "cpu":  # where the remaining gap lies: kernels, not the algorithm (module docstring)
            if is_conv and torch.backends.mkldnn.is_available():

                def torch_im2col_step():  # PyTorch's own im2col + matrix-product convolutions
                    torch.backends.mkldnn.enabled = False
                    try:
                        return torch_step()
                    finally:
                        torch.backends.mkldnn.enabled = True

                steps["torch_im2col"] = (torch_im2col_step, tsync)
            steps["numpy_mm"], steps["torch_mm"] = product_steps(step_products(model, in_shape, n), dtype, rng)

        # Honesty check: both compute the same loss and gradient.
        res, tl = kfac_step(), torch_step()
        g, tg = to_numpy(res.grad), torch_flat_grad(tmodel)
        row["loss_rel_err"] = abs(res.loss - float(tl)) / abs(float(tl))
        row["grad_rel_err"] = float(np.linalg.norm(g - tg) / np.linalg.norm(tg))

    # Repetitions alternate between the frameworks (kfac_ref's turn, torch's turn,
    # ...), so that a slow spell of the machine hits both.  After a call, each
    # framework's worker threads (OpenBLAS's, torch's OpenMP) spin for a while, and
    # on a machine with few cores they would steal the CPU from the other
    # framework's next call.  So a turn starts with a pause (--pause: the other
    # side's threads go to sleep), then untimed calls for at least --wake seconds
    # (this side's threads wake up: on the 2-core KVM guest of docs/benchmarks.md a
    # second thread ran at one core's speed for the first 50-60 ms after a pause,
    # three calls of a 20 ms step), then times calls for at least --turn seconds (one
    # call for the big models, several for the small ones): the steady state of a
    # training loop.  A repetition's time is the median of its turn.
    times = {k: [] for k in steps}
    sys_time = {k: [0.0, 0] for k in steps}  # kernel seconds, calls
    for rnd in range(args.warmup + args.reps):
        for key, (step, sync) in steps.items():  # kfac_ref, torch, kfac_ref, torch, ...
            time.sleep(args.pause)
            woken = time.perf_counter()
            while True:  # at least one untimed call
                time_once(step, sync)
                if time.perf_counter() - woken >= args.wake:
                    break
            turn, start, sys0 = [], time.perf_counter(), system_seconds()
            while not turn or time.perf_counter() - start < args.turn:
                turn.append(time_once(step, sync))
            if rnd >= args.warmup:
                times[key].append(statistics.median(turn))
                sys_time[key][0] += system_seconds() - sys0
                sys_time[key][1] += len(turn)
    for key, ts in times.items():
        row[f"{key}_ms"] = 1e3 * statistics.median(ts)
        row[f"{key}_fraction"] = row["gflop"] / statistics.median(ts) / rate  # of the matrix-product rate
        row[f"{key}_ms_min"] = 1e3 * min(ts)
        row[f"{key}_sys_ms"] = 1e3 * sys_time[key][0] / sys_time[key][1]  # mean kernel time per call
    if use_torch:
        row["ratio"] = row["kfac_ref_ms"] / row["torch_ms"]
    if "torch_im2col_ms" in row:
        row["im2col_ratio"] = row["kfac_ref_ms"] / row["torch_im2col_ms"]
    if "numpy_mm_ms" in row:
        row["blas_ratio"] = row["numpy_mm_ms"] / row["torch_mm_ms"]  # NumPy's BLAS / torch's, the same products
        row["mm_floor"] = row["numpy_mm_ms"] / row["torch_ms"]  # the ratio with nothing but the products
    if "split_ms" in row:
        row["split_speedup"] = row["kfac_ref_ms"] / row["split_ms"]  # over T BLAS threads, same row
        row["split_gain"] = row["one_ms"] / row["split_ms"]  # over one thread: the other cores' gain
        if use_torch:
            row["split_ratio"] = row["split_ms"] / row["torch_ms"]
    return row


# ---- report ----------------------------------------------------------------------------
def verdict(r) -> str:
    """'ok' or 'MISS' per goal that applies to the row ('' when none can be checked)."""
    marks = []
    if "ratio" in r:
        marks.append("ok" if r["ratio"] <= r["goal_ratio"] else "MISS")
    if r["goal_fraction"] is not None:
        marks.append("ok" if r["kfac_ref_fraction"] >= r["goal_fraction"] else "MISS")
    return "/".join(marks)


def print_table(rows, meta):
    print(
        f"kfac_ref {meta['kfac_ref']}  numpy {meta['numpy']}  torch {meta['torch'] or '—'}  "
        f"device {meta['device']}  reps {meta['reps']} (median)  processor {meta['processor'] or '—'}  "
        f"from {meta['kfac_ref_path']}"
    )
    load = "—" if meta["load_average_1min"] is None else f"{meta['load_average_1min']:.2f}"
    print(
        f"BLAS {meta['blas']};  cpu_count {meta['cpu_count']};  load before start {load};  malloc: {meta['malloc']};  "
        f"OPENBLAS_CORETYPE={meta['openblas_coretype'] or '(unset)'} "
        f"OPENBLAS_L2_SIZE={meta['openblas_l2_size'] or '(unset)'}"
    )
    rates = ", ".join(f"{k}: {v:.0f}" for k, v in meta["matmul_gflops"].items())
    print(f"matrix product 1536² (GFLOP/s, dtype/threads): {rates}")
    head = (
        f"{'model':<8}{'dtype':<9}{'thr':>4}{'N':>6}{'kfac_ref ms':>13}{'torch ms':>10}{'ratio':>7}{'goal':>6}"
        f"{'kfac %mm':>10}{'torch %mm':>10}{'':>2}{'verdict':<9}{'grad err':>9}{'sys ms k/t':>12}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        torch_ms = f"{r['torch_ms']:10.1f}" if "torch_ms" in r else f"{'—':>10}"
        ratio = f"{r['ratio']:7.2f}" if "ratio" in r else f"{'—':>7}"
        t_frac = f"{100 * r['torch_fraction']:9.1f}%" if "torch_fraction" in r else f"{'—':>10}"
        err = f"{r['grad_rel_err']:9.0e}" if "grad_rel_err" in r else f"{'—':>9}"
        sys_ms = f"{r['kfac_ref_sys_ms']:.0f}/" + (f"{r['torch_sys_ms']:.0f}" if "torch_sys_ms" in r else "—")
        print(
            f"{r['model']:<8}{r['dtype']:<9}{r['threads']:>4}{r['batch']:>6}{r['kfac_ref_ms']:13.1f}{torch_ms}"
            f"{ratio}{'≤' + format(r['goal_ratio'], 'g'):>6}{100 * r['kfac_ref_fraction']:9.1f}%{t_frac}"
            f"{'':>2}{verdict(r):<9}{err}{sys_ms:>12}"
        )
    print(
        "ratio = kfac_ref ms / torch ms (goal ≤ 1 at N ≥ 1,024, ≤ 1.3 below);  %mm = achieved share of the "
        "1536² matrix-product rate in the same dtype and thread count (goal for ConvNets at N ≥ 1,024: ≥ 25%)"
    )
    kernels = [r for r in rows if "mm_floor" in r]
    if kernels:
        print("\nwhere the gap lies: PyTorch without oneDNN (its im2col + matrix-product convolutions), and the")
        print("step's matrix products alone in each library (same shapes and operands)")
        print(
            f"{'model':<8}{'dtype':<9}{'thr':>4}{'N':>6}{'kfac_ref ms':>13}{'im2col ms':>11}{'×im2col':>9}"
            f"{'numpy mm':>10}{'torch mm':>10}{'BLAS ×':>8}{'floor':>7}{'ratio':>7}"
        )
        for r in kernels:
            im2col = f"{'—':>11}{'—':>9}"
            if "im2col_ratio" in r:
                im2col = f"{r['torch_im2col_ms']:11.1f}{r['im2col_ratio']:9.2f}"
            print(
                f"{r['model']:<8}{r['dtype']:<9}{r['threads']:>4}{r['batch']:>6}{r['kfac_ref_ms']:13.1f}{im2col}"
                f"{r['numpy_mm_ms']:10.1f}{r['torch_mm_ms']:10.1f}{r['blas_ratio']:8.2f}{r['mm_floor']:7.2f}"
                f"{r['ratio']:7.2f}"
            )
        print(
            "×im2col = kfac_ref ms / PyTorch-without-oneDNN ms;  numpy mm, torch mm = the step's products alone;  "
            "BLAS × = numpy mm / torch mm;  floor = numpy mm / torch ms, the ratio kfac_ref would reach if "
            "the products were all it did"
        )
    split = [r for r in rows if "split_ms" in r]
    if split:
        print("\n--split: the batch in T blocks of samples on T threads (model.workers = T), BLAS at 1 thread")
        print(
            f"{'model':<8}{'dtype':<9}{'thr':>4}{'N':>6}{'1-thread ms':>12}{'split ms':>10}{'gain':>7}{'×BLAS-T':>9}"
            f"{'ratio':>7}{'sys ms':>8}{'err':>9}"
        )
        for r in split:
            ratio = f"{r['split_ratio']:7.2f}" if "split_ratio" in r else f"{'—':>7}"
            print(
                f"{r['model']:<8}{r['dtype']:<9}{r['threads']:>4}{r['batch']:>6}{r['one_ms']:12.1f}{r['split_ms']:10.1f}"
                f"{r['split_gain']:7.2f}{r['split_speedup']:9.2f}{ratio}{r['split_sys_ms']:8.0f}"
                f"{r['split_grad_rel_err']:9.0e}"
            )
        print(
            "gain = 1-thread ms / split ms (the same step, interleaved);  "
            "×BLAS-T = kfac_ref ms with T BLAS threads / split ms;  "
            "ratio = split ms / torch ms;  err = ‖∇ split − ∇ unsplit‖ / ‖∇‖"
        )


def _int_list(text):
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return vals


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=_int_list, default=[128, 1024], help="batch sizes N (default 128,1024)")
    ap.add_argument("--threads", type=_int_list, default=[1, 2], help="thread counts, BLAS and torch (default 1,2)")
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions per case (default 7)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed repetitions first (default 2)")
    ap.add_argument(
        "--pause",
        type=float,
        default=0.2,
        help="seconds of idle before each framework's turn, so that the other "
        "framework's spinning threads have gone to sleep (default 0.2)",
    )
    ap.add_argument(
        "--wake",
        type=float,
        default=0.15,
        help="seconds of untimed calls after each pause, so that every thread of the turn's side is up to "
        "speed (default 0.15; 0 = one call, the benchmark before 2026-12-05)",
    )
    ap.add_argument("--turn", type=float, default=0.02, help="seconds of timed calls per framework turn (default 0.02)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 reps, 1 warm-up, N = 64 only, 1 thread")
    ap.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help=f"comma-separated subset of {list(MODELS)}, or 'all' (default: {','.join(DEFAULT_MODELS)})",
    )
    ap.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated subset of float32,float64")
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu"), help="'gpu' needs CuPy")
    ap.add_argument("--no-torch", action="store_true", help="time kfac_ref alone")
    ap.add_argument(
        "--tune-malloc",
        action="store_true",
        help="glibc only: keep freed memory in the process instead of returning it to "
        "the OS, so large temporaries are not page-faulted in again every step "
        "(both frameworks; see the 'sys ms' column)",
    )
    ap.add_argument(
        "--split",
        action="store_true",
        help="at T > 1 threads also time kfac_ref with model.workers = T (the batch in T blocks of "
        "samples on T threads) and one BLAS thread",
    )
    ap.add_argument("--json", metavar="PATH", help="also save the results as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.warmup, args.batches, args.threads = 2, 1, [64], [1]
    names, dtypes = list(MODELS) if args.models == "all" else args.models.split(","), args.dtypes.split(",")
    for v, known in ((names, MODELS), (dtypes, DTYPES)):
        bad = [k for k in v if k not in known]
        if bad:
            ap.error(f"unknown {bad}: expected a subset of {list(known)}")

    malloc = "system default"
    if args.tune_malloc:
        malloc = (
            "tuned (mmap/trim thresholds 1 GiB, one arena)" if tune_malloc() else "system default (tuning unavailable)"
        )
    use_torch = torch is not None and not args.no_torch
    if use_torch and args.device == "gpu" and not torch.cuda.is_available():
        print("torch has no CUDA device: timing kfac_ref alone", file=sys.stderr)
        use_torch = False

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if load is not None and load > 0.5:
        print(
            f"warning: load average {load:.2f} before starting: other processes are using the "
            f"CPU and the timings will be noisy",
            file=sys.stderr,
        )
    blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
    meta = {
        "kfac_ref": kfac_ref.__version__,
        "kfac_ref_path": os.path.dirname(os.path.realpath(kfac_ref.__file__)),
        "numpy": np.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "device": args.device,
        "batches": args.batches,
        "threads": args.threads,
        "reps": args.reps,
        "warmup": args.warmup,
        "pause_s": args.pause,
        "wake_s": args.wake,
        "turn_s": args.turn,
        "blas": ", ".join(f"{p['internal_api']} {p['version']} ({p.get('architecture', '?')})" for p in blas) or "—",
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "openblas_l2_size": os.environ.get("OPENBLAS_L2_SIZE"),
        "cpu_count": os.cpu_count(),
        "load_average_1min": load,
        "malloc": malloc,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": cpu_name(),
        "matmul_gflops": {},
    }
    rows = []
    for threads in args.threads:
        with limit_blas_threads(threads):
            if use_torch:
                torch.set_num_threads(threads)
            for dtype_name in dtypes:
                rate = matmul_rate(DTYPES[dtype_name], args.device)
                meta["matmul_gflops"][f"{dtype_name}/{threads}"] = rate
                for n in args.batches:
                    for name in names:
                        rows.append(bench_case(name, dtype_name, n, threads, rate, args, use_torch))
    print_table(rows, meta)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": rows}, fh, indent=2)
        print(f"saved {args.json}")
    return rows


def cpu_name() -> str | None:
    """The processor's model name (Linux: /proc/cpuinfo), else what platform says."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


if __name__ == "__main__":
    main()
