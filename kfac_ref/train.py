"""The training loop: one optimizer, one dataset, records by iteration and by wall-clock.

Every iteration records ``iteration``, ``seconds`` (cumulative *training* time,
GPU synchronised, evaluation excluded) and ``batch_loss`` (the mini-batch loss
h before that step); every ``eval_every`` iterations (and at iteration 0) also
the training and validation loss and accuracy.  Fields not measured are
None.  A NaN/Inf loss stops the run with a message; what was recorded is kept.

Evaluation is forward only (no cache, no backward, no curvature statistics), in
chunks of 1,024 samples.  The validation figures use the whole validation set; the
training figures use a fixed subset of ``eval_train`` training samples
(:func:`eval_subset`: the same samples in every run, whatever the run's seed; default
:data:`EVAL_TRAIN_SAMPLES`), or all of them when there are no more than that or when
``eval_train`` is None — so that on a large training set evaluation does not dominate
the run.

An optional ``after_step(opt, x, y, theta, info)`` hook runs after every step, outside the
clock (like evaluation), with the step's batch, θ as it was *before* the step and the
step's info dict; a dict it returns is merged into that iteration's record (`kfac-ref
compare --diagnostics K` records its angles this way), None adds nothing.

Mini-batches are drawn without replacement, one seeded permutation per epoch,
so a run is a function of its seed; :class:`Trainer` state (permutation,
position, random generator, records) is what a checkpoint stores.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .backend import get_xp, synchronize, to_numpy
from .data.batches import BatchStream
from .errors import NonFiniteError
from .params import get_flat_params
from .validate import as_rng, check_number

#: the training figures are measured on this many training samples (all when there are fewer)
EVAL_TRAIN_SAMPLES = 10_000
#: the seed of the fixed evaluation subset (independent of a run's seed: every run measures the same samples)
EVAL_SEED = 0

RECORD_FIELDS = ("iteration", "seconds", "batch_loss", "train_loss", "train_acc", "val_loss", "val_acc")


@dataclass
class History:
    """What a run recorded: one dict per iteration with :data:`RECORD_FIELDS`."""

    records: list = field(default_factory=list)
    stopped: str | None = None  # why the run ended early (NaN loss, …), or None

    def column(self, name: str):
        """(iterations, values) where ``name`` was measured."""
        pts = [(r["iteration"], r[name]) for r in self.records if r.get(name) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]


def evaluate(model, loss_fn, x, y, batch_size: int = 1024) -> tuple[float, float]:
    """(mean loss, accuracy) of the model on (x, y), in chunks of ``batch_size``."""
    total_loss, correct, n = 0.0, 0, x.shape[0]
    for i in range(0, n, batch_size):
        f = model(x[i : i + batch_size])
        yb = y[i : i + batch_size]
        total_loss += float(loss_fn.per_sample(f, yb).sum())
        if yb.ndim == 1:  # class labels
            correct += int((f.argmax(axis=1) == yb).sum())
    return total_loss / n, (correct / n if y.ndim == 1 else float("nan"))


def eval_subset(n_train: int, size: int | None = EVAL_TRAIN_SAMPLES):
    """Sorted indices (size,) of the fixed training subset the training figures are measured on.

    None (every sample) when ``size`` is None or ≥ n_train; else the first ``size`` entries of
    the permutation of range(n_train) drawn by ``np.random.default_rng(EVAL_SEED)``, sorted.
    """
    if size is None or size >= n_train:
        return None
    check_number("eval_train", size, low=1, integer=True)
    return np.sort(np.random.default_rng(EVAL_SEED).permutation(n_train)[:size])


def describe_eval(n_train: int, size: int | None = EVAL_TRAIN_SAMPLES) -> str:
    """What the training figures are measured on, in words (for logs, summaries and progress bars)."""
    if eval_subset(n_train, size) is None:
        return f"all {n_train:,} training samples"
    return f"a fixed subset of {size:,} of the {n_train:,} training samples (seed {EVAL_SEED})"


class Trainer:
    """Runs an optimizer over a :class:`~kfac_ref.data.Dataset`, resumably.

    ``rng`` draws the batch order and is passed to ``opt.step`` (Monte-Carlo
    targets), so one generator makes the whole run reproducible.  ``after_step`` and
    ``eval_train``: see the module docstring (neither is part of a checkpoint).
    """

    def __init__(
        self,
        optimizer,
        data,
        batch_size: int,
        rng,
        eval_every: int = 10,
        after_step=None,
        eval_train: int | None = EVAL_TRAIN_SAMPLES,
    ):
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        if after_step is not None and not callable(after_step):
            raise TypeError(
                "after_step must be a function (opt, x, y, theta, info) -> dict or None, "
                f"got {type(after_step).__name__}"
            )
        n = data.n_train
        self.batch_size = check_number("batch_size", batch_size, low=1, integer=True)
        if self.batch_size > n:
            raise ValueError(f"batch_size must be ≤ the {n} training samples, got {batch_size}")
        self.eval_every = check_number("eval_every", eval_every, low=1, integer=True)
        self.opt, self.data, self.rng = optimizer, data, rng
        if hasattr(optimizer, "check_batch_size"):  # e.g. R ≤ m on R ranks, before the first step
            optimizer.check_batch_size(self.batch_size)
        self.after_step = after_step
        idx = eval_subset(n, eval_train)
        if idx is None:
            self.eval_x, self.eval_y = data.x_train, data.y_train
        else:
            idx = get_xp(data.x_train).asarray(idx)
            self.eval_x, self.eval_y = data.x_train[idx], data.y_train[idx]
        self.history = History()
        self.seconds = 0.0  # cumulative training time
        self._stream = None  # the BatchStream, made at the first batch (its first permutation drawn then)

    @property
    def iteration(self) -> int:
        return self.opt.steps

    @property
    def order(self):
        """The current epoch's permutation (host), None before the first batch."""
        return None if self._stream is None else self._stream.order

    @property
    def pos(self) -> int:
        """Where the next batch starts in :attr:`order`."""
        return 0 if self._stream is None else self._stream.pos

    def _make_stream(self, order=None, pos: int = 0):
        """Batches without replacement, the tail of each epoch dropped (:class:`~kfac_ref.data.BatchStream`)."""
        return BatchStream(
            self.data.x_train, self.data.y_train, self.batch_size, self.rng, drop_last=True, order=order, pos=pos
        )

    def _next_batch(self):
        if self._stream is None:
            self._stream = self._make_stream()
        return next(self._stream)

    def _record(self, batch_loss, measure: bool):
        rec = dict.fromkeys(RECORD_FIELDS)
        rec.update(iteration=self.iteration, seconds=self.seconds, batch_loss=batch_loss)
        if measure:
            m, lf, d = self.opt.model, self.opt.loss_fn, self.data
            try:
                rec["train_loss"], rec["train_acc"] = evaluate(m, lf, self.eval_x, self.eval_y)
                rec["val_loss"], rec["val_acc"] = evaluate(m, lf, d.x_val, d.y_val)
            except NonFiniteError:  # NaN/Inf outputs: the run diverged (stopped by run())
                rec["train_loss"] = rec["val_loss"] = float("nan")
        self.history.records.append(rec)
        return rec

    def run(self, until: int, progress=None) -> History:
        """Train until ``until`` iterations in all; ``progress(rec)`` is called after each.

        The full losses are measured every ``eval_every`` iterations and at ``until``.
        """
        until = check_number("iterations", until, low=0, integer=True)
        if not self.history.records:
            self._record(None, measure=True)  # the starting point
        xp = get_xp(self.data.x_train)
        while self.iteration < until and self.history.stopped is None:
            xb, yb = self._next_batch()
            theta = None if self.after_step is None else get_flat_params(self.opt.model)  # θ before the step
            synchronize(xp)
            start = time.perf_counter()
            try:
                info = self.opt.step(xb, yb, self.rng)
            except (NonFiniteError, np.linalg.LinAlgError) as exc:  # the run diverged: stop it, keep it
                self.history.stopped = f"stopped at iteration {self.iteration + 1}: {exc}"
                break
            synchronize(xp)
            self.seconds += time.perf_counter() - start
            extra = None if self.after_step is None else self.after_step(self.opt, xb, yb, theta, info)  # off the clock
            measure = self.iteration % self.eval_every == 0 or self.iteration == until
            rec = self._record(info["loss"], measure)
            if extra:
                if set(extra) & set(RECORD_FIELDS):
                    raise ValueError(
                        f"after_step returned {sorted(set(extra) & set(RECORD_FIELDS))}: "
                        f"fields the trainer records itself ({', '.join(RECORD_FIELDS)})"
                    )
                rec.update(extra)
            if measure and not math.isfinite(rec["train_loss"]):
                self.history.stopped = (
                    f"stopped at iteration {self.iteration}: the training loss became {rec['train_loss']}"
                )
            if progress is not None:
                progress(rec)
        return self.history

    # ---- state ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "seconds": self.seconds,
            "order": to_numpy(self.order),
            "pos": self.pos,
            "rng": self.rng.bit_generator.state,
            "records": self.history.records,
            "stopped": self.history.stopped,
        }

    def load_state_dict(self, state: dict) -> None:
        self.seconds = float(state["seconds"])
        self.rng.bit_generator.state = state["rng"]
        self._stream = (
            None if state["order"] is None else self._make_stream(np.asarray(state["order"]), int(state["pos"]))
        )
        self.history = History(records=list(state["records"]), stopped=state["stopped"])


def fit(
    optimizer,
    data,
    iterations: int,
    batch_size: int = 128,
    seed: int = 0,
    eval_every: int = 10,
    progress=None,
    eval_train: int | None = EVAL_TRAIN_SAMPLES,
) -> History:
    """Train ``optimizer`` (holding its model) on ``data`` for ``iterations`` steps.

    Returns the :class:`History`; see the module docstring for what is recorded.
    """
    if not isinstance(seed, np.random.Generator):  # an int ≥ 0 (NumPy's seeds), or a Generator
        seed = check_number("fit: seed", seed, low=0, integer=True)
    trainer = Trainer(optimizer, data, batch_size, as_rng(seed, "fit"), eval_every, eval_train=eval_train)
    return trainer.run(iterations, progress)
