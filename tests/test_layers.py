"""No module imports a layer above its own (docs/ARCHITECTURE.md): the code reads as the pipeline.

Every `import netflowgen.x` / `from netflowgen.x import ...` in src/, at module level or inside a
function, is checked against the layer table below."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "netflowgen"

# Lower numbers are lower layers; a module may import its own layer and those below.
LAYERS: dict[str, int] = {
    "schema": 0, "config": 0, "rejects": 0, "progress": 0, "artifacts": 0, "__init__": 0,
    "sources": 1, "nodes": 1, "export": 1, "live": 1, "simulate": 1,
    "features": 2,
    "tokens": 3,
    "model": 4,
    "train": 5, "evaluate": 5, "detect": 5,
    "api": 6, "experiments": 6, "notebook": 6, "serve": 6,
    "cli": 7,
}


def _layer(module: str) -> int:
    parts = module.split(".")
    assert parts[0] == "netflowgen"
    return LAYERS[parts[1]] if len(parts) > 1 else 0


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("netflowgen")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("netflowgen"):
            if node.module == "netflowgen":  # from netflowgen import config, ...: the named submodules
                out += [(node.lineno, f"netflowgen.{a.name}") for a in node.names if a.name in LAYERS]
            else:
                out.append((node.lineno, node.module))
    return out


def upward_imports() -> list[str]:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        module = ".".join(rel.parts)
        if path.name == "__init__.py" and path.parent == SRC:
            continue  # the package top re-exports the API lazily (netflowgen.NetFlowGen, Detector)
        own = _layer(module.replace(".__init__", ""))
        for line, target in _imports(path):
            if _layer(target) > own:
                bad.append(f"{path.relative_to(SRC.parent)}:{line}: {module} (layer {own}) imports {target} "
                           f"(layer {_layer(target)})")
    return bad


def test_every_package_has_a_layer() -> None:
    names = {p.stem if p.is_file() else p.name for p in SRC.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert names <= set(LAYERS), f"no layer for {sorted(names - set(LAYERS))}"


def test_no_module_imports_a_higher_layer() -> None:
    bad = upward_imports()
    assert not bad, "upward imports:\n" + "\n".join(bad)
