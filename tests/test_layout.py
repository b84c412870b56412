"""The package tree follows the data flow: every import points down it, and nothing below the runner imports Ray."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "petseg"
# Lowest first: a module may import its own layer and the layers below it, never a later one.
LAYERS = [
    {"errors", "disk", "node_cache", "metrics", "drawing", "plugins"},
    {"synthetic"},
    {"data"},
    {"models"},
    {"train"},
    {"tune"},
    {"report"},
    {"study"},
    {"bench"},
]
RAY_FREE = {"errors", "disk", "node_cache", "metrics", "drawing", "plugins", "synthetic", "data", "models", "train"}


def unit(module: str) -> str:
    """The top-level part of petseg a dotted module name belongs to ("petseg.tune.config" -> "tune")."""
    return module.split(".")[1]


def layer(module: str) -> int:
    return next(index for index, names in enumerate(LAYERS) if unit(module) in names)


def imports(path: Path) -> list[str]:
    """Absolute names of every module `path` imports (relative imports resolved), at any depth in the file."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    package = ".".join(("petseg", *parts[:-1]))  # what a relative import of this file starts from
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return found


def modules():
    return [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] != "__init__.py"]


def test_every_module_belongs_to_a_layer():
    for path in modules():
        name = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        assert any(name in names for names in LAYERS), f"{path} is in no layer of the flow"


def test_imports_only_point_down_the_flow():
    upward = []
    for path in modules():
        own = layer("petseg." + path.relative_to(PACKAGE).parts[0].removesuffix(".py"))
        for name in imports(path):
            if name.startswith("petseg.") and name.count(".") >= 1 and layer(name) > own:
                upward.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not upward, "\n".join(sorted(set(upward)))


def test_nothing_below_the_tune_runner_imports_ray():
    offenders = [f"{path.relative_to(PACKAGE)}" for path in modules()
                 if path.relative_to(PACKAGE).parts[0].removesuffix(".py") in RAY_FREE
                 and any(name == "ray" or name.startswith("ray.") for name in imports(path))]
    assert not offenders, offenders
