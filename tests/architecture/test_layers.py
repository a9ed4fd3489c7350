"""The package's layers, bottom to top: a module imports only from its own layer or the ones below
(docs/architecture.md). Every import counts, the lazy ones inside functions too."""

import ast
from pathlib import Path

import distrec

LAYERS = [
    {"__init__", "errors", "artifacts", "figures", "pipeline"},  # the version, files, manifests, the stage graph
    {"data", "clustering", "decoding", "eval"},  # tables, k-means, decoders, metrics
    {"models"},  # pure torch: backbones, methods, the Recommender interface
    {"tokenize"},  # embedders, quantizers, the SID table
    {"train"},  # the engines, the training loop, checkpoints, exported weights
    {"inference"},  # a trained model answering histories (Predictor); no Ray
    {"parallel"},  # Ray: the only package that imports it
    {"scaling"},  # sweeps over the stages' commands, scaling-law fits
    {"config"},  # the config schema, assembled from each group's dataclass, and its composition
    {"stages"},  # one module per subcommand over typed artifacts
    {"cli", "__main__"},  # the command line
]
PACKAGE = Path(distrec.__file__).parent


def layer_of(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    return next((i for i, names in enumerate(LAYERS) if top in names), 0)  # `from distrec import __version__`


def imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("distrec"):
            names = [node.module] if node.module != "distrec" else [f"distrec.{a.name}" for a in node.names]
            out += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("distrec.")]
    return out


def test_every_top_level_module_has_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
            if (p.suffix == ".py" or (p / "__init__.py").exists())}
    assert tops <= set().union(*LAYERS), tops - set().union(*LAYERS)


def test_no_import_runs_up_the_layers():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = "distrec." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        for line, imported in imports(path):
            if layer_of(imported) > layer_of(module):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {imported}")
    assert not upward, "\n".join(upward)
