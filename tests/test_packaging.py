"""pyproject.toml and environment.yml must list the same dependencies, in the same ranges; the
conda environment is the whole one (runtime plus every extra), from conda-forge alone."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda spells two packages differently from PyPI.
CONDA_TO_PYPI = {"pytorch": "torch"}


def _split(spec: str) -> tuple[str, str]:
    name, version = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", spec).groups()
    return name.lower().replace("_", "-"), version.replace(" ", "")


def pyproject_requirements(extras: bool = False) -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    if extras:
        specs += [s for group in project["optional-dependencies"].values() for s in group]
    return dict(_split(s) for s in specs)


def conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    found = {}
    for item in env["dependencies"]:
        if isinstance(item, str):
            name, version = _split(item)
            if name not in ("python", "pip"):
                found[CONDA_TO_PYPI.get(name, name)] = version
    return found


def test_environment_yml_and_pyproject_list_the_same_dependencies():
    assert conda_requirements() == pyproject_requirements(extras=True)
    assert yaml.safe_load((ROOT / "environment.yml").read_text())["channels"] == ["conda-forge"]


def test_test_and_notebook_tools_stay_out_of_the_runtime_dependencies():
    runtime = pyproject_requirements()
    assert not {"pytest", "nbval", "jupyterlab", "jupytext"} & set(runtime)
    assert "seaborn" in runtime  # sclib.report.plots draws with it
    assert "'.[test]'" in (ROOT / "scripts" / "setup.sh").read_text()  # the README's two commands still work


def test_python_floor_agrees():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert data["project"]["requires-python"] == ">=3.11"
    assert "python>=3.11" in env["dependencies"]


def test_torch_is_not_pinned_above_what_the_machine_offers():
    # A floor, never an exact pin, so pip resolves torch from the machine's own wheels.
    torch_spec = pyproject_requirements()["torch"]
    assert torch_spec.startswith(">=") and "==" not in torch_spec
