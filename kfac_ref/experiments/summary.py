"""Iterations and seconds to reach targets, per optimizer, and the ratios to SGD.

A run reaches a target at the first *measured* record (every ``eval_every``
iterations) whose training loss is ≤ the loss target, or whose validation
accuracy is ≥ the accuracy target.  Unless stated, the targets are a few round
values, the hardest ones *every* run reaches (the largest of the runs' best
training losses and the smallest of their best validation accuracies) and, when
SGD is among the runs, SGD's best training loss and best validation accuracy
(what "K-FAC reaches SGD's best loss in k× fewer iterations" is measured at, even
when a capped run such as NGD's does not get there).
"""

from __future__ import annotations

import math

ROUND_TARGETS = {"train_loss": (0.1, 0.01), "val_acc": (0.9, 0.95)}


def _measured(records, key):
    return [r for r in records if r.get(key) is not None and math.isfinite(r[key])]


def default_targets(runs) -> dict:
    """{"train_loss": …, "val_acc": …}: the hardest targets that every run reaches."""
    best_losses = [
        min((r["train_loss"] for r in _measured(run["records"], "train_loss")), default=math.inf) for run in runs
    ]
    best_accs = [max((r["val_acc"] for r in _measured(run["records"], "val_acc")), default=-math.inf) for run in runs]
    return {"train_loss": max(best_losses), "val_acc": min(best_accs)}


def target_list(runs, loss_targets=None, acc_targets=None) -> list[tuple[str, float]]:
    """(metric, value) pairs: the given targets, or the round ones, the hardest all reach and SGD's best."""
    hardest = default_targets(runs)
    sgd = (
        default_targets([r for r in runs if r["optimizer"] == "sgd"])
        if any(r["optimizer"] == "sgd" for r in runs)
        else {"train_loss": math.inf, "val_acc": -math.inf}
    )
    out = []
    for key, given in (("train_loss", loss_targets), ("val_acc", acc_targets)):
        if key == "val_acc" and not given and not _measures_accuracy(runs):
            continue  # a reconstruction has no accuracy: no round accuracy targets
        values = list(given) if given else [*ROUND_TARGETS[key], hardest[key], sgd[key]]
        values = [v for v in values if math.isfinite(v)]
        out += [(key, v) for v in sorted(set(values), reverse=(key == "train_loss"))]
    return out


def _measures_accuracy(runs) -> bool:
    """Whether any record holds a finite validation accuracy (an autoencoder's never does)."""
    return any(r.get("val_acc") is not None and math.isfinite(r["val_acc"]) for run in runs for r in run["records"])


def explain_target(runs, key: str, value: float) -> str:
    """Where a target of :func:`target_list` comes from, in words (why a value like 0.009476 is there)."""
    hardest = default_targets(runs)[key]
    sgd = [r for r in runs if r["optimizer"] == "sgd"]
    why = []
    if value in ROUND_TARGETS[key]:
        why.append("a round value")
    best = "best training loss" if key == "train_loss" else "best validation accuracy"
    if value == hardest:
        pick = max if key == "train_loss" else min
        bests = {r["optimizer"]: default_targets([r])[key] for r in runs}
        who = pick(bests, key=bests.get)
        why.append(f"the hardest every run reaches: {'SGD' if who == 'sgd' else who}'s {best}")
    if sgd and value == default_targets(sgd)[key] and not (value == hardest and why[-1].endswith(f"SGD's {best}")):
        why.append(f"SGD's {best}")
    return "; ".join(why) or "given"


def time_to_target(records, key: str, target: float):
    """(iteration, seconds) of the first measured record meeting the target, or (None, None)."""
    better = (lambda v: v <= target) if key.endswith("loss") else (lambda v: v >= target)
    for r in _measured(records, key):
        if better(r[key]):
            return r["iteration"], r["seconds"]
    return None, None


def seconds_per_iteration(run) -> float | None:
    """Training seconds divided by iterations done (None before the first step)."""
    last = run["records"][-1]
    return last["seconds"] / last["iteration"] if last["iteration"] else None


def summarize(runs, targets=None) -> dict:
    """Per target and optimizer: iterations and seconds to reach it, and SGD's cost / the method's.

    targets : list of (metric, value) with metric "train_loss" or "val_acc" (default :func:`target_list`).
    """
    targets = target_list(runs) if targets is None else list(targets)
    finals, per_iter = {}, {}
    for run in runs:
        losses, accs = _measured(run["records"], "train_loss"), _measured(run["records"], "val_acc")
        finals[run["optimizer"]] = {
            "settings": run.get("settings", {}),
            "iterations": run["records"][-1]["iteration"],
            "train_loss": losses[-1]["train_loss"] if losses else None,
            "val_acc": accs[-1]["val_acc"] if accs else None,
        }
        per_iter[run["optimizer"]] = seconds_per_iteration(run)
    rows = []
    for key, value in targets:
        reached = {run["optimizer"]: time_to_target(run["records"], key, value) for run in runs}
        base = reached.get("sgd", (None, None))
        for name, (it, sec) in reached.items():
            rows.append(
                {
                    "metric": key,
                    "target": value,
                    "optimizer": name,
                    "iterations": it,
                    "seconds": sec,
                    "iterations_sgd_ratio": base[0] / it if base[0] is not None and it else None,
                    "seconds_sgd_ratio": base[1] / sec if base[1] is not None and sec else None,
                }
            )
    return {
        "targets": [{"metric": k, "value": v, "why": explain_target(runs, k, v)} for k, v in targets],
        "rows": rows,
        "seconds_per_iteration": per_iter,
        "finals": finals,
    }


def cell(v, spec: str, missing: str = "—") -> str:
    """A table cell: ``v`` formatted by ``spec``, ``missing`` for None."""
    return missing if v is None else format(v, spec)


def format_ratio(ratio, fewer: str, more: str) -> str:
    """SGD's cost over the method's, in words either way: 5 → "5.0× fewer", 0.0116 → "86× more"; None → "—".

    A ratio below 1 is a slow-down, written as its inverse so that it never reads as "0.0".
    """
    if ratio is None:
        return "—"
    if ratio == 1:
        return "same"
    factor, word = (ratio, fewer) if ratio > 1 else (1 / ratio, more)
    return f"{factor:.1f}× {word}" if factor < 10 else f"{factor:.0f}× {word}"


def format_summary(summary: dict) -> str:
    """:func:`summarize`'s result in Markdown: each method's settings and final figures, where each
    target comes from, and the table of iterations and seconds to it (ratios to SGD read as
    speed-ups or slow-downs)."""
    lines = []
    if summary.get("finals"):
        lines += [
            "| optimizer | settings | iterations | final train loss | final val acc |",
            "|---|---|---:|---:|---:|",
        ]
        for name, f in summary["finals"].items():
            settings = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in f["settings"].items())
            loss, acc = cell(f["train_loss"], ".4g"), cell(f["val_acc"], ".4f")
            lines.append(f"| {name} | {settings} | {f['iterations']} | {loss} | {acc} |")
        lines.append("")
    lines += [
        "Seconds per iteration (training only): "
        + ", ".join(f"{k} {cell(v, '.4f')}" for k, v in summary["seconds_per_iteration"].items())
        + ".  Wall-clock time on this machine: on a busy machine (other processes on the same cores) "
        "timings are noisy, so compare them within one run, or rerun on a quiet machine; iterations are exact.",
        "",
        "First measured iteration at which each target is met, and how the method's cost compares with "
        'SGD\'s ("5.0× fewer": a fifth of SGD\'s iterations; "3.0× more time": three times SGD\'s '
        "seconds); — = not reached.",
        "",
        "Targets: "
        + "; ".join(
            f"{'train loss ≤' if t['metric'] == 'train_loss' else 'val acc ≥'} {t['value']:.4g} ({t['why']})"
            for t in summary["targets"]
            if "why" in t
        )
        + ".",
        "",
        "| target | optimizer | iterations | iterations vs SGD | seconds | time vs SGD |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in summary["rows"]:
        what = f"train loss ≤ {r['target']:.4g}" if r["metric"] == "train_loss" else f"val acc ≥ {r['target']:.4g}"
        lines.append(
            f"| {what} | {r['optimizer']} | {cell(r['iterations'], 'd')} "
            f"| {format_ratio(r['iterations_sgd_ratio'], 'fewer', 'more')} | {cell(r['seconds'], '.2f')} "
            f"| {format_ratio(r['seconds_sgd_ratio'], 'less time', 'more time')} |"
        )
    return "\n".join(lines) + "\n"
