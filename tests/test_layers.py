"""The package's layers: imports point one way, and what only reads results loads no training code.

The folder list is the plan (README, "Layout"): ``core`` (the method) and ``data`` know nothing
above them; ``run`` (a run folder and building its parts) sits on them; ``eval`` computes from a
trained run; ``train`` is the loop; ``report`` renders and runs studies; ``cli`` is on top. Every
import counts, those inside functions too, since a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sclib"

# Layer of each top-level part of sclib; a module may import its own layer and those below.
LAYERS = {"seed_report": 0, "core": 1, "data": 1, "run": 2, "eval": 3, "train": 4, "report": 5, "cli": 6,
          "__main__": 7, "__init__": 0}


def _part(module: str) -> str:
    """``sclib.run.build`` -> ``run``; ``sclib.train`` -> ``train``."""
    return module.split(".")[1] if module.count(".") else "__init__"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)] = path
    return found


def _imports(path: Path, module: str) -> set[str]:
    """Every sclib module ``path`` imports (``from sclib.run import files`` -> ``sclib.run.files``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("sclib")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sclib"):
            out |= {f"{node.module}.{a.name}" if node.module.count(".") < 1 else node.module for a in node.names}
    return out


MODULES = _modules()


def test_every_module_belongs_to_a_layer():
    assert {_part(m) for m in MODULES if m != "sclib"} <= set(LAYERS), sorted({_part(m) for m in MODULES})


def test_every_import_of_sclib_names_a_module_the_layer_test_knows():
    """``from sclib import __version__`` names a value of the package, not a module: the only one."""
    names = {m for path in MODULES.values() for m in _imports(path, "")}
    assert {m for m in names if m not in MODULES} == {"sclib.__version__"}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "sclib"))
def test_no_module_imports_a_layer_above_its_own(module):
    own = LAYERS[_part(module)]
    above = sorted(m for m in _imports(MODULES[module], module) if m in MODULES and LAYERS[_part(m)] > own)
    assert not above, f"{module} (layer {_part(module)}) imports {above}"


def test_the_layer_test_sees_arrows_inside_functions():
    """The check itself: a lazy import in a function body is found."""
    imports = _imports(PACKAGE / "run" / "config.py", "sclib.run.config")
    assert "sclib.run.adapt" in imports  # imported inside _adapt, for adaptive recipes only


def _loaded_by(*modules: str) -> set[str]:
    code = ("import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
            "print('\\n'.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True, cwd=ROOT,
                          check=True)
    return set(done.stdout.split())


def test_what_only_reads_results_loads_neither_torch_nor_training_code():
    """The front page, summaries, tables and the ablation table render committed results: no torch
    (``import torch`` loads ``torch.optim`` too), no trainer, no model."""
    loaded = _loaded_by("sclib.report.front", "sclib.report.summary", "sclib.report.tables",
                        "sclib.report.ablations")
    assert "sclib.report.front" in loaded
    assert not {m for m in loaded if m == "torch" or m.startswith("torch.")}
    assert not loaded & {"sclib.train", "sclib.core.optim", "sclib.core.loss", "sclib.core.model"}


def test_the_notebooks_helpers_load_no_training_code():
    """Notebooks 02-05 evaluate and probe where a run lacks the files; they never train."""
    loaded = _loaded_by("sclib.report.notebook", "sclib.report.plots", "sclib.eval.evaluate", "sclib.eval.probe")
    assert "sclib.report.notebook" in loaded
    assert not loaded & {"sclib.train", "sclib.core.loss", "sclib.core.nnqueue", "sclib.report.sweep"}
