"""The shape of the code, read with :mod:`ast` (nothing is imported or run): module sizes, argument lists, layers.

``python tools/code_shape.py [ROOT]`` prints each package's largest modules (lines), the longest function
argument lists, and every import that goes up the declared layer order (:data:`LAYERS`) or round a cycle.
``tests/test_architecture.py`` asserts the limits with the same functions (:data:`MAX_MODULE_LINES`,
:data:`MAX_PARAMETERS`), on this tree and on small fake packages that break each rule.

Counting rules:

* a module's lines are its physical lines (as ``wc -l`` counts them);
* a function's parameters are its positional-only, positional and keyword-only parameters, plus one each for
  ``*args`` and ``**kwargs``; the ``self`` or ``cls`` of a method is not counted. Nested functions and
  methods count like any other function; lambdas do not;
* an import is every ``import`` / ``from ... import`` of a module of the tree (relative ones resolved), at
  module level or inside a function (*lazy*): a lazy import is still a dependency. ``from pkg import name``
  counts as an import of ``pkg.name`` when that is a module of the tree, else of ``pkg``.
"""
from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("vaanet", "analysis")  # the packages whose modules are read
MAX_MODULE_LINES = 400  # no module under vaanet/ longer
MAX_PARAMETERS = 10  # no function with more parameters (counted as above)

# Layers, bottom to top: a module may import from its own layer and the layers below, never from one above.
# An entry ending in "/" is a folder (every module below it), else one file; a file entry wins over a folder.
# config.py composes the data, model and loss settings (SamplingConfig, ModelConfig, the class tables), so it
# sits above those and below train; credentials.py and the other base modules import nothing of vaanet.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("vaanet/__init__.py", "vaanet/credentials.py", "vaanet/classes.py", "vaanet/faults.py",
              "vaanet/signals.py", "vaanet/figures.py", "vaanet/stats.py")),
    ("data", ("vaanet/data/",)),
    ("models", ("vaanet/models/",)),
    ("losses", ("vaanet/losses.py",)),
    ("config", ("vaanet/config.py",)),
    ("train", ("vaanet/train/",)),
    ("tune", ("vaanet/tune/",)),
    ("apps", ("vaanet/cli.py", "vaanet/predict.py", "vaanet/verify.py", "vaanet/estimate.py", "vaanet/calibrate.py",
              "vaanet/verify_study.py")),
    ("analysis", ("analysis/",)),
)

# Modules that must import nothing from the named folders (whatever the layers say).
FORBIDDEN: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("vaanet/config.py", ("vaanet/train/", "vaanet/tune/")),
    ("vaanet/credentials.py", ("vaanet/train/", "vaanet/tune/")),
)

@dataclass(frozen=True)
class Import:
    source: str  # the importing file, relative to the root ("vaanet/train/loop.py")
    target: str  # the imported module ("vaanet.train.tracking")
    line: int
    lazy: bool  # inside a function


def module_files(root: str | Path, packages: Iterable[str] = PACKAGES) -> list[Path]:
    """Every ``.py`` file of ``packages`` under ``root``, sorted."""
    root = Path(root)
    return sorted(p for pkg in packages if (root / pkg).is_dir() for p in (root / pkg).rglob("*.py")
                  if "__pycache__" not in p.parts)


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def module_name(rel: str) -> str:
    """``vaanet/train/loop.py`` -> ``vaanet.train.loop``; a package's ``__init__.py`` -> the package."""
    parts = rel[:-3].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_lines(root: str | Path, packages: Iterable[str] = PACKAGES) -> dict[str, int]:
    """Lines per module file (relative path -> count)."""
    root = Path(root)
    return {_rel(p, root): len(p.read_bytes().splitlines()) for p in module_files(root, packages)}


def largest_modules(root: str | Path, packages: Iterable[str] = PACKAGES, per_package: int = 3) -> dict[str, list]:
    """Each package folder's ``per_package`` largest modules: folder -> [(relative path, lines)], largest first."""
    by_folder: dict[str, list] = {}
    for rel, n in module_lines(root, packages).items():
        by_folder.setdefault(rel.rsplit("/", 1)[0], []).append((rel, n))
    return {folder: sorted(mods, key=lambda m: (-m[1], m[0]))[:per_package] for folder, mods in sorted(by_folder.items())}


def count_parameters(args: ast.arguments, method: bool) -> int:
    """Positional-only + positional + keyword-only, +1 for ``*args``, +1 for ``**kwargs``; a method's leading
    ``self`` / ``cls`` excluded."""
    positional = [*args.posonlyargs, *args.args]
    if method and positional and positional[0].arg in ("self", "cls"):
        positional = positional[1:]
    return len(positional) + len(args.kwonlyargs) + (args.vararg is not None) + (args.kwarg is not None)


def parameter_counts(root: str | Path, packages: Iterable[str] = PACKAGES) -> list[tuple[str, str, int, int]]:
    """Every function and method: (qualified name, relative path, line, parameters), most parameters first."""
    root = Path(root)
    found = []

    def visit(node: ast.AST, prefix: str, in_class: bool, rel: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                found.append((name, rel, child.lineno, count_parameters(child.args, in_class)))
                visit(child, name + ".", False, rel)
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.", True, rel)
            else:
                visit(child, prefix, in_class, rel)

    for path in module_files(root, packages):
        rel = _rel(path, root)
        visit(ast.parse(path.read_bytes(), filename=str(path)), module_name(rel) + ":", False, rel)
    return sorted(found, key=lambda f: (-f[3], f[1], f[2]))


def _resolve(node: ast.ImportFrom | ast.Import, rel: str, known: set[str]) -> list[str]:
    """The modules of the tree that one import statement imports."""
    def known_prefix(dotted: str) -> str | None:
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in known:
                return ".".join(parts[:i])
        return None

    if isinstance(node, ast.Import):
        return [m for a in node.names if (m := known_prefix(a.name))]
    if node.level:
        package = module_name(rel).split(".") if rel.endswith("__init__.py") else module_name(rel).split(".")[:-1]
        base = ".".join(package[:len(package) - (node.level - 1)] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    targets = []
    for a in node.names:
        full = f"{base}.{a.name}"
        target = full if full in known else known_prefix(base)
        if target:
            targets.append(target)
    return targets


def imports(root: str | Path, packages: Iterable[str] = PACKAGES) -> list[Import]:
    """Every import of a module of the tree by a module of the tree (the same target once per statement)."""
    root = Path(root)
    files = module_files(root, packages)
    known = {module_name(_rel(p, root)) for p in files}
    found = []

    def visit(node: ast.AST, lazy: bool, rel: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in dict.fromkeys(_resolve(child, rel, known)):
                    found.append(Import(rel, target, child.lineno, lazy))
            visit(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)), rel)

    for path in files:
        rel = _rel(path, root)
        visit(ast.parse(path.read_bytes(), filename=str(path)), False, rel)
    return found


def _matches(rel: str, entry: str) -> bool:
    return rel.startswith(entry) if entry.endswith("/") else rel == entry


def layer_of(rel: str, layers=LAYERS) -> int | None:
    """The index of the layer a file belongs to (a file entry before a folder entry), or None."""
    for want_file in (True, False):
        for i, (_, entries) in enumerate(layers):
            if any(_matches(rel, e) for e in entries if e.endswith("/") != want_file):
                return i
    return None


def _file_of(module: str, root: Path) -> str:
    path = Path(*module.split("."))
    return (path / "__init__.py").as_posix() if (root / path).is_dir() else path.as_posix() + ".py"


def unlayered(root: str | Path, layers=LAYERS, packages: Iterable[str] = PACKAGES) -> list[str]:
    """Modules that no layer names."""
    return [rel for rel in module_lines(root, packages) if layer_of(rel, layers) is None]


def upward_imports(root: str | Path, layers=LAYERS, packages: Iterable[str] = PACKAGES
                   ) -> list[tuple[Import, str, str]]:
    """Imports from a layer above the importer's, lazy ones included: (import, importer's layer, imported
    layer). A lower layer that needs an upper one's work takes it as an argument (e.g. the study's ``report``)."""
    root = Path(root)
    found = []
    for imp in imports(root, packages):
        src, dst = layer_of(imp.source, layers), layer_of(_file_of(imp.target, root), layers)
        if src is not None and dst is not None and dst > src:
            found.append((imp, layers[src][0], layers[dst][0]))
    return found


def forbidden_imports(root: str | Path, rules=FORBIDDEN, packages: Iterable[str] = PACKAGES) -> list[Import]:
    """Imports that :data:`FORBIDDEN` rules out."""
    root = Path(root)
    return [imp for imp in imports(root, packages) for module, banned in rules
            if imp.source == module and any(_matches(_file_of(imp.target, root), b) for b in banned)]


def import_cycles(root: str | Path, packages: Iterable[str] = PACKAGES) -> list[list[str]]:
    """Groups of modules that import each other round a cycle (strongly connected components of two or more
    modules, or a module importing itself), lazy imports included; each group sorted."""
    root = Path(root)
    graph: dict[str, set[str]] = {module_name(rel): set() for rel in module_lines(root, packages)}
    for imp in imports(root, packages):
        graph[module_name(imp.source)].add(imp.target)
    # Tarjan's algorithm, iterative
    index, low, stack, on_stack, groups, counter = {}, {}, [], set(), [], [0]
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1 or node in graph[node]:
                    groups.append(sorted(group))
    return sorted(groups)


def report(root: str | Path, per_package: int = 3, longest: int = 12) -> str:
    """The printout of :func:`main`."""
    root = Path(root)
    out = [f"largest modules per package (limit for vaanet/: {MAX_MODULE_LINES} lines)"]
    for folder, mods in largest_modules(root, per_package=per_package).items():
        out.append(f"  {folder}/: " + ", ".join(f"{rel.rsplit('/', 1)[1]} {n}" for rel, n in mods))
    out.append(f"longest argument lists (limit: {MAX_PARAMETERS}; self/cls not counted, *args and **kwargs one each)")
    for name, rel, line, n in parameter_counts(root)[:longest]:
        out.append(f"  {n:3d}  {name}  ({rel}:{line})")
    out.append("layers, bottom to top: " + " < ".join(name for name, _ in LAYERS))
    up = upward_imports(root)
    out.append(f"upward imports: {len(up)}")
    for imp, src, dst in up:
        out.append(f"  {imp.source}:{imp.line} ({src}) imports {imp.target} ({dst}){' lazily' if imp.lazy else ''}")
    forbidden = forbidden_imports(root)
    out.append(f"forbidden imports: {len(forbidden)}")
    out += [f"  {imp.source}:{imp.line} imports {imp.target}" for imp in forbidden]
    cycles = import_cycles(root)
    out.append(f"import cycles: {len(cycles)}")
    out += ["  " + " <-> ".join(group) for group in cycles]
    missing = unlayered(root)
    out.append(f"modules in no layer: {len(missing)}" + (": " + ", ".join(missing) if missing else ""))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(report(Path(argv[0]) if argv else Path(__file__).resolve().parent.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
