"""The package's layering, read from the source with ``ast`` (nothing is imported).

Every ``import wavepatch...`` / ``from wavepatch... import`` is collected, inside functions too, and relative
imports are resolved. The module graph must have no cycle, and a module may import only modules of a strictly
lower layer (rank below) or of its own subpackage. The foundation (rank 0) and the application (rank 7) are one
layer each: their modules may use one another, the cycle check keeping them acyclic.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "wavepatch"

# Layer of each module, by name prefix (the longest listed prefix wins); "wavepatch" is the package __init__ only.
RANKS = {
    "wavepatch": 0,
    "wavepatch.types": 0,
    "wavepatch.linalg": 0,
    "wavepatch.wavelets": 0,
    "wavepatch.resources": 0,
    "wavepatch.shapes": 0,
    "wavepatch.io": 0,
    "wavepatch.physics": 1,
    "wavepatch.geometry": 1,
    "wavepatch.fidelity": 2,
    "wavepatch.tasks": 3,
    "wavepatch.prior": 4,
    "wavepatch.sampling": 5,
    "wavepatch.recon": 5,
    "wavepatch.metrics": 6,
}
APPLICATION = 7  # everything else: cli, cli_prior, bench, report, analysis.*, ...


def _modules() -> dict[str, Path]:
    """Dotted name -> file for every module under src/wavepatch (a package is named by its __init__)."""
    out = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> dict[str, int]:
    """wavepatch modules that ``name`` imports -> line of the first such import."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        if (target == ROOT or target.startswith(ROOT + ".")) and target != name:
            found.setdefault(target, line)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: up (level - 1) packages from this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{source}.{alias.name}"
                add(sub if sub in MODULES else source, node.lineno)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def rank(name: str) -> int:
    if name == ROOT:
        return RANKS[ROOT]
    keys = [k for k in RANKS if k != ROOT and (name == k or name.startswith(k + "."))]
    return RANKS[max(keys, key=len)] if keys else APPLICATION


def group(name: str) -> str:
    """Imports within a group are free: a subpackage (wavepatch.physics), the foundation, or the application."""
    r = rank(name)
    return f"rank {r}" if r in (0, APPLICATION) else ".".join(name.split(".")[:2])


def _where(src: str, dst: str) -> str:
    return f"{MODULES[src].relative_to(SRC.parent)}:{GRAPH[src][dst]}"


def _runtime_edges(src: str) -> set[str]:
    """What importing ``src`` runs: each imported module and the packages above it (their __init__), except
    the packages ``src`` itself lives in."""
    own = {".".join(src.split(".")[:i]) for i in range(1, src.count(".") + 2)}
    out = set()
    for dst in GRAPH[src]:
        parts = dst.split(".")
        out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} - own
    return {d for d in out if d in MODULES}


def _cycles() -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), as [a, b, ..., a]."""
    edges = {m: sorted(_runtime_edges(m)) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for m in sorted(MODULES):
        if m not in index:
            visit(m)
    cycles = []
    for comp in components:  # shortest path back to the start inside the component (breadth first)
        members, start = set(comp), min(comp)
        prev: dict[str, str] = {}
        queue = [start]
        while queue and start not in prev:
            v = queue.pop(0)
            for w in edges[v]:
                if w in members and w not in prev:
                    prev[w] = v
                    queue.append(w)
        path = [start]
        while len(path) == 1 or path[-1] != start:
            path.append(prev[path[-1]])
        cycles.append(path[::-1])
    return cycles


def test_the_source_is_found_and_imports_are_read():
    assert {"wavepatch", "wavepatch.linalg", "wavepatch.physics.base", "wavepatch.metrics"} <= set(MODULES)
    assert "wavepatch.linalg" in GRAPH["wavepatch.wavelets"]
    assert rank("wavepatch.physics.ct") == 1 and rank("wavepatch.cli") == APPLICATION and rank("wavepatch") == 0
    assert group("wavepatch.recon.fista") == "wavepatch.recon" != group("wavepatch.sampling.wsgm")


def test_no_import_cycles():
    cycles = _cycles()
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_modules_import_only_lower_layers_or_their_own_subpackage():
    bad = []
    for src in sorted(GRAPH):
        for dst in sorted(GRAPH[src]):
            if rank(dst) < rank(src) or group(dst) == group(src):
                continue
            bad.append(f"{src} (rank {rank(src)}) -> {dst} (rank {rank(dst)})   {_where(src, dst)}")
    assert not bad, f"{len(bad)} imports against the layers:\n" + "\n".join(bad)
