"""The package's layering, read from its imports (docs/architecture.md).

Every module of kfac_ref has a rank; a module may import only modules of a
lower rank, or modules of its own package (``fisher.solve`` may import
``fisher.kron``).  That gives the one-way data path

    backend → nn → backprop → grads → fisher → optim → train → experiments → cli

with the small helpers (linalg, data, params, models, jvp, …) placed where their
imports allow.  A new top-level module must be given a rank here, which is the
point: where it sits is a decision, not an accident.  A second test checks that
every layer type has its forward-mode rule in :data:`kfac_ref.jvp.RULES`.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import kfac_ref
from kfac_ref import jvp, nn

PACKAGE = Path(kfac_ref.__file__).resolve().parent

#: top-level module or sub-package of kfac_ref → rank (lower ranks may be imported by higher)
RANKS = {
    "backend": 0,
    "errors": 0,  # the one "the run diverged" exception: imported by nn, optim, train
    "io": 0,  # atomic file writing: checkpoint, data downloads, every figure and table
    "malloc": 0,  # glibc's malloc thresholds: set by the cli, recorded by experiments, re-used by benchmarks
    "validate": 0,  # the shared argument checks and the one RNG rule: imported by nn, data, fisher, optim, …
    "mpi": 1,  # the MPI transport (collectives, batch shards): imported by optim.distributed
    "linalg": 1,
    "nn": 1,
    "data": 1,
    "params": 2,
    "backprop": 2,
    "models": 2,
    "grads": 3,
    "jvp": 3,
    "gradcheck": 3,
    "fisher": 4,
    "optim": 5,
    "train": 6,
    "settings": 6,  # settings files {optimizer: {hyper-parameter: value}}: checks optimizer names; used by cli
    "checkpoint": 7,  # validates a file against a Trainer before applying it
    "experiments": 7,
    "audit": 8,  # reference bundles and the audit of another K-FAC: fisher, grads, models, data, the CLI parsers
    "cli": 9,
    "__main__": 10,
}
#: the façade: kfac_ref/__init__.py re-exports the public names and may import anything
FACADE = "kfac_ref"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """kfac_ref modules imported by the file (relative imports resolved; lazy imports included)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "kfac_ref"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "kfac_ref":
                continue
            for alias in node.names:  # `from . import nn` imports the module kfac_ref.nn
                sub = f"{target}.{alias.name}"
                out.add(sub if _is_module(sub) else target)
    return out


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def top(name: str) -> str:
    """'kfac_ref.fisher.solve' → 'fisher'."""
    return name.split(".")[1]


def violations(graph: dict[str, set[str]], ranks: dict[str, int] = RANKS) -> list[str]:
    """Imports that go against the layering: to a higher or equal rank outside the own package."""
    bad = []
    for mod, deps in sorted(graph.items()):
        if mod == FACADE:
            continue
        for dep in sorted(deps):
            if dep == FACADE:
                bad.append(f"{mod} imports the package façade kfac_ref (import the module instead)")
            elif top(dep) != top(mod) and ranks[top(dep)] >= ranks[top(mod)]:
                bad.append(f"{mod} (rank {ranks[top(mod)]}) imports {dep} (rank {ranks[top(dep)]})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles between modules (depth-first search)."""
    found, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                found.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


@pytest.fixture(scope="module")
def graph():
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_top_level_module_has_a_rank(graph):
    missing = sorted({top(m) for m in graph if m != FACADE} - set(RANKS))
    assert not missing, f"give these modules a rank in tests/test_architecture.py (and docs/architecture.md): {missing}"


def test_imports_follow_the_one_way_layering(graph):
    assert violations(graph) == []


def test_no_import_cycles(graph):
    assert cycles({m: d for m, d in graph.items() if m != FACADE}) == []


def test_the_import_reader_sees_the_known_edges(graph):
    assert "kfac_ref.backprop" in graph["kfac_ref.grads"]  # from .backprop import ...
    assert "kfac_ref.fisher.vectors" in graph["kfac_ref.optim.preconditioned"]  # from ..fisher.vectors import ...
    assert "kfac_ref.nn" in graph["kfac_ref.models"]  # from . import nn
    assert "kfac_ref.grads" in graph["kfac_ref.fisher.metrics"]  # an import inside a function


def test_a_made_up_upward_import_is_reported():
    fake = {
        "kfac_ref.nn.linear": {"kfac_ref.fisher.dense", "kfac_ref.backend"},
        "kfac_ref.fisher.solve": {"kfac_ref.fisher.kron"},  # within its package: fine
        "kfac_ref.grads": {"kfac_ref.jvp"},  # same rank, different module
        "kfac_ref.optim.sgd": {"kfac_ref"},
    }
    assert violations(fake) == [
        "kfac_ref.grads (rank 3) imports kfac_ref.jvp (rank 3)",
        "kfac_ref.nn.linear (rank 1) imports kfac_ref.fisher.dense (rank 4)",
        "kfac_ref.optim.sgd imports the package façade kfac_ref (import the module instead)",
    ]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


# --- forward-mode rules ---------------------------------------------------------------
def _all_layer_types():
    """Every concrete Layer subclass defined anywhere in kfac_ref."""
    for info in pkgutil.walk_packages(kfac_ref.__path__, "kfac_ref."):
        if info.name != "kfac_ref.__main__":
            importlib.import_module(info.name)
    todo, seen = [nn.Layer], set()
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen:
                seen.add(sub)
                todo.append(sub)
    containers = {nn.ParamLayer, nn.Sequential}  # a base class; flattened into its layers
    return sorted(
        (
            c
            for c in seen
            if c.__module__.startswith("kfac_ref.") and c not in containers and not c.__name__.startswith("_")
        ),  # private bases such as _Pool2d
        key=lambda c: c.__name__,
    )


def test_every_layer_type_has_a_forward_mode_rule():
    """K-FAC's exact quadratic model (rescale=True, kl_clip=None) runs jvp through every layer."""
    layer_types = _all_layer_types()
    assert {nn.Linear, nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten} <= set(layer_types)
    missing = [c.__name__ for c in layer_types if c not in jvp.RULES]
    assert not missing, f"add a forward-mode rule to kfac_ref.jvp.RULES for: {missing}"


def test_a_layer_without_a_rule_is_a_clear_error(rng):
    class Double(nn.Layer):
        def forward_cached(self, x):
            return 2 * x, None

        def backward(self, cache, grad_out):
            return 2 * grad_out

    model = nn.Sequential(nn.Linear(3, 2), Double(), seed=0)
    trace = kfac_ref.forward(model, rng.standard_normal((4, 3)))
    with pytest.raises(TypeError, match="no forward-mode rule for Double"):
        jvp.jvp(model, trace, rng.standard_normal((1, model.num_params)))
