"""Iterations and seconds to reach a target, per optimizer, and the ratios to SGD.

A run reaches a target at the first *measured* record (every ``eval_every``
iterations) whose training loss is ≤ the loss target, or whose validation
accuracy is ≥ the accuracy target.  Unless stated, the targets are the
hardest ones *every* run reaches: the largest of the runs' best training
losses and the smallest of their best validation accuracies — so with SGD the
slowest, the loss target is the best training loss SGD reached in its budget.
"""

from __future__ import annotations

import math


def _measured(records, key):
    return [r for r in records if r.get(key) is not None and math.isfinite(r[key])]


def default_targets(runs) -> dict:
    """{"train_loss": …, "val_acc": …}: the hardest targets that every run reaches."""
    best_losses = [min((r["train_loss"] for r in _measured(run["records"], "train_loss")), default=math.inf)
                   for run in runs]
    best_accs = [max((r["val_acc"] for r in _measured(run["records"], "val_acc")), default=-math.inf)
                 for run in runs]
    return {"train_loss": max(best_losses), "val_acc": min(best_accs)}


def time_to_target(records, key: str, target: float):
    """(iteration, seconds) of the first measured record meeting the target, or (None, None)."""
    better = (lambda v: v <= target) if key.endswith("loss") else (lambda v: v >= target)
    for r in _measured(records, key):
        if better(r[key]):
            return r["iteration"], r["seconds"]
    return None, None


def summarize(runs, targets=None) -> dict:
    """Per optimizer: iterations and seconds to each target, and the ratios SGD / method."""
    targets = default_targets(runs) if targets is None else targets
    rows = []
    for run in runs:
        row = {"optimizer": run["optimizer"]}
        for key in ("train_loss", "val_acc"):
            row[f"{key}_iterations"], row[f"{key}_seconds"] = time_to_target(run["records"], key, targets[key])
        last = run["records"][-1]
        row["seconds_per_iteration"] = last["seconds"] / last["iteration"] if last["iteration"] else None
        rows.append(row)
    base = next((r for r in rows if r["optimizer"] == "sgd"), None)
    for row in rows:
        for key in ("train_loss_iterations", "train_loss_seconds", "val_acc_iterations", "val_acc_seconds"):
            b, v = (base or {}).get(key), row[key]
            row[f"{key}_sgd_ratio"] = (b / v) if (b is not None and v) else None
    return {"targets": targets, "rows": rows}


def _fmt(v, spec):
    return "—" if v is None else format(v, spec)


def format_summary(summary: dict) -> str:
    """A Markdown table of :func:`summarize`'s result."""
    t = summary["targets"]
    lines = [
        f"Targets: training loss ≤ {t['train_loss']:.4g}, validation accuracy ≥ {t['val_acc']:.4g} "
        "(first measured iteration reaching it; ratios are SGD's cost divided by the method's, "
        "so 5× means five times fewer).",
        "",
        "| optimizer | s / iteration | iterations to loss | seconds to loss | × fewer iterations | × faster (time) "
        "| iterations to acc | seconds to acc | × fewer iterations | × faster (time) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        lines.append(
            f"| {r['optimizer']} | {_fmt(r['seconds_per_iteration'], '.4f')} "
            f"| {_fmt(r['train_loss_iterations'], 'd')} | {_fmt(r['train_loss_seconds'], '.2f')} "
            f"| {_fmt(r['train_loss_iterations_sgd_ratio'], '.1f')} | {_fmt(r['train_loss_seconds_sgd_ratio'], '.1f')} "
            f"| {_fmt(r['val_acc_iterations'], 'd')} | {_fmt(r['val_acc_seconds'], '.2f')} "
            f"| {_fmt(r['val_acc_iterations_sgd_ratio'], '.1f')} | {_fmt(r['val_acc_seconds_sgd_ratio'], '.1f')} |")
    return "\n".join(lines) + "\n"
