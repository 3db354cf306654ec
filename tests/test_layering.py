"""The package's layering (ARCHITECTURE.md): which parts may import which. Every import counts,
at module level or inside a function, so a forbidden arrow cannot hide in a function body."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "frugalformers"

# part -> parts it must never import (a part: a subpackage, or a top-level module without .py)
FORBIDDEN = {
    "files": "*",  # the bottom: nothing from the package
    "registry": "*",
    "options": "*",
    "kernels": {"nn", "models", "train", "data", "config", "api", "checkpoint", "cli", "compare", "convert"},
    "nn": {"models", "train", "data", "cli", "compare", "convert", "api", "checkpoint", "presets", "demo", "dist"},
    "data": {"models", "nn", "kernels", "train", "api", "checkpoint", "compare", "convert", "cli", "dist", "demo"},
    "config": {"models", "nn", "kernels", "train", "data", "api", "checkpoint", "cli", "compare", "convert"},
    "checkpoint": {"train", "data", "cli", "compare", "convert", "demo"},
    "convert": {"train", "cli", "compare", "demo"},
    "train": {"cli", "compare", "demo"},
    "models": {"train", "data", "cli", "compare", "convert", "demo", "dist"},
}


def _part(path: Path) -> str:
    return path.relative_to(PKG).parts[0].removesuffix(".py")


def imports() -> list[tuple[str, str, str, int]]:
    """(importing part, imported part, file, line) for every import of the package by itself."""
    out = []
    for f in PKG.rglob("*.py"):
        tree = ast.parse(f.read_text(), str(f))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "frugalformers":
                names = (
                    [node.module] if node.module != "frugalformers" else [f"frugalformers.{a.name}" for a in node.names]
                )
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.split(".")[0] == "frugalformers"]
            for name in names:
                parts = name.split(".")
                if len(parts) > 1 and parts[1] != _part(f):
                    out.append((_part(f), parts[1], str(f.relative_to(PKG)), node.lineno))
    return out


def test_no_part_imports_what_its_layer_forbids():
    bad = [
        f"{file}:{line}: {src} imports {dst}"
        for src, dst, file, line in imports()
        if src in FORBIDDEN and (FORBIDDEN[src] == "*" or dst in FORBIDDEN[src])
    ]
    assert not bad, "\n".join(bad)


def test_the_check_sees_imports_inside_functions():
    found = {(src, dst) for src, dst, _, _ in imports()}
    assert ("cli", "train") in found and ("api", "models") in found  # api imports models in a function


def test_no_source_file_over_500_lines():
    """Small modules, one concept each (ARCHITECTURE.md): a file past 500 lines is split by concept."""
    long = {str(f.relative_to(PKG)): n for f in PKG.rglob("*.py") if (n := len(f.read_text().splitlines())) > 500}
    assert not long, long


def test_imports_inside_functions_only_in_the_cli():
    """A module imports the package at its top, where a cycle would show at once; only the CLI
    defers its imports (each subcommand loads what it runs, so `frugal --help` starts fast)."""
    late = set()
    for f in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("frugalformers"):
                        late.add(str(f.relative_to(PKG)))
    assert late <= {"cli.py"}, sorted(late)


# imports a function may defer: optional or heavy dependencies a plain `import frugalformers` must
# not pay for (plotting, Hugging Face, tensorboard, data-format readers, the distributed stack)
DEFERRABLE = ("matplotlib", "transformers", "omegaconf", "torch.utils.tensorboard", "sentencepiece", "pysword",
              "rdata", "torch.distributed", "torch.nn.parallel")  # fmt: skip


def test_other_modules_defer_only_optional_or_heavy_imports():
    """Outside the CLI, an import inside a function is an optional or heavy dependency, never a
    standard-library or core module put there by habit."""
    late = set()
    for f in PKG.rglob("*.py"):
        if f.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    names = [sub.module or ""] if isinstance(sub, ast.ImportFrom) else []
                    names += [a.name for a in sub.names] if isinstance(sub, ast.Import) else []
                    late |= {(str(f.relative_to(PKG)), n) for n in names if not n.startswith(DEFERRABLE)}
    assert not late, sorted(late)
