"""JupyterLab with the project's settings (.jupyter/, scripts/lab.sh) and the one kernel everything uses."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from sclib.report import lab

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / ".jupyter"
NOTEBOOK = "03_clustering_metrics"


def _server_config():
    """The project's jupyter_server_config.py as Jupyter loads it (a traitlets Python config file)."""
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader("jupyter_server_config.py", path=str(CONFIG)).load_config()


def _executed(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook as Lab saves it after a run: outputs, counts, the kernel's language_info, timings."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.9"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    for i, cell in enumerate(nb.cells, start=1):
        cell.metadata["scrolled"] = True
        if cell.cell_type == "code":
            cell.execution_count = i
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
            cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00.000Z"}
    return nb


# -- the default viewer ------------------------------------------------------------------------------


def test_the_shipped_settings_open_a_python_file_with_jupytexts_notebook_viewer():
    overrides = json.loads((CONFIG / "labconfig" / "default_setting_overrides.json").read_text())
    viewer = overrides["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]["python"]
    assert viewer == "Jupytext Notebook"
    # the name must be the factory jupytext's Lab extension registers, not just any string
    extension = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "jupyterlab-jupytext"
    if not extension.is_dir():
        pytest.skip("jupytext's Lab extension is not installed here (pip install -e '.[lab]')")
    assert any(f'"{viewer}"' in js.read_text(errors="ignore") for js in extension.rglob("*.js"))


def test_jupyterlab_reads_the_overrides_from_a_folder_on_jupyter_config_path(monkeypatch):
    pytest.importorskip("jupyterlab_server")
    from jupyterlab_server.settings_utils import _get_overrides

    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(CONFIG))
    overrides, error = _get_overrides(str(ROOT / "no-app-settings-here"))
    assert not error
    assert overrides["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]["python"] == "Jupytext Notebook"


# -- the server config: root, one kernel, clean saves ---------------------------------------------


def test_the_server_config_lists_one_kernel_and_scrubs_saves():
    config = _server_config()
    assert config.KernelSpecManager.allowed_kernelspecs == {lab.ensure_kernel()}
    assert config.ContentsManager.pre_save_hook is lab.scrub_paired_notebook
    assert config.ContentsManager.preferred_dir == "notebooks"


def test_lab_sh_starts_at_the_repository_root_with_the_project_config(tmp_path):
    """A stand-in .venv/bin/jupyter records how the script calls it."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "lab.sh", repo / "scripts" / "lab.sh")
    bin_dir = repo / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "jupyter-lab").write_text("")
    (bin_dir / "jupyter-lab").chmod(0o755)
    (bin_dir / "jupyter").write_text('#!/bin/sh\necho "cwd=$PWD"\necho "path=$JUPYTER_CONFIG_PATH"\necho "args=$*"\n')
    (bin_dir / "jupyter").chmod(0o755)
    out = subprocess.run(["bash", str(repo / "scripts" / "lab.sh"), "--no-browser"], capture_output=True, text=True,
                         cwd=tmp_path, env={**os.environ, "JUPYTER_CONFIG_PATH": "/elsewhere"}, check=True).stdout
    real = repo.resolve()
    assert f"cwd={real}\n" in out
    assert f"path={real}/.jupyter:/elsewhere\n" in out
    assert f"args=lab --ServerApp.root_dir={real} --no-browser\n" in out


def test_lab_sh_without_jupyterlab_says_how_to_install_it(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "lab.sh", tmp_path / "scripts" / "lab.sh")
    result = subprocess.run(["bash", str(tmp_path / "scripts" / "lab.sh")], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "lab: JupyterLab is not installed in .venv; run: .venv/bin/python -m pip install -e '.[lab]'"]


def test_the_committed_form_of_an_executed_notebook_is_the_committed_file():
    path = ROOT / "notebooks" / f"{NOTEBOOK}.ipynb"
    committed = path.read_text()
    clean = lab.committed_form(_executed(nbformat.reads(committed, as_version=4)))
    assert nbformat.writes(nbformat.from_dict(clean)) + "\n" == committed


def test_cell_metadata_the_py_keeps_survives_the_scrub():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]})])
    clean = lab.committed_form(_executed(nb))
    assert clean["cells"][0]["metadata"] == {"tags": ["parameters"]} and clean["cells"][0]["outputs"] == []


def _pair(folder: Path) -> None:
    (folder / "notebooks").mkdir()
    shutil.copy(ROOT / "jupytext.toml", folder / "jupytext.toml")
    for suffix in (".py", ".ipynb"):
        shutil.copy(ROOT / "notebooks" / f"{NOTEBOOK}{suffix}", folder / "notebooks" / f"{NOTEBOOK}{suffix}")


def test_saving_an_executed_notebook_through_jupytext_leaves_the_pair_as_committed(tmp_path, monkeypatch):
    """What Lab does on save: jupytext's (async) contents manager, configured from the project's file, writes both."""
    contentsmanager = pytest.importorskip("jupytext.async_contentsmanager")
    _pair(tmp_path)
    monkeypatch.setattr(lab, "notebooks_dir", lambda: tmp_path / "notebooks")
    manager = contentsmanager.AsyncTextFileContentsManager(root_dir=str(tmp_path), config=_server_config())
    path = f"notebooks/{NOTEBOOK}.py"

    async def open_run_and_save():
        model = await manager.get(path, type="notebook")
        assert model["content"].cells[0].cell_type == "markdown"
        await manager.save({"type": "notebook", "format": "json", "content": _executed(model["content"])}, path)

    asyncio.run(open_run_and_save())
    for suffix in (".py", ".ipynb"):
        assert (tmp_path / "notebooks" / f"{NOTEBOOK}{suffix}").read_text() == \
            (ROOT / "notebooks" / f"{NOTEBOOK}{suffix}").read_text(), suffix


def test_a_notebook_outside_notebooks_keeps_its_outputs(tmp_path):
    """An executed study in runs/ opened and saved in Lab must not lose what it shows."""
    _pair(tmp_path)
    nb = _executed(nbformat.read(tmp_path / "notebooks" / f"{NOTEBOOK}.ipynb", as_version=4))
    model = {"type": "notebook", "content": nb}
    lab.scrub_paired_notebook(model, str(tmp_path / "notebooks" / f"{NOTEBOOK}.ipynb"), contents_manager=None)
    assert model["content"] is nb and nb.cells[1].outputs  # not the repository's notebooks/


def test_the_scrub_applies_to_the_repositorys_pairs_only(tmp_path):
    assert lab.is_project_notebook(ROOT / "notebooks" / f"{NOTEBOOK}.ipynb")
    assert not lab.is_project_notebook(ROOT / "notebooks" / f"{NOTEBOOK}.py")
    lone = tmp_path / "notebooks" / "lone.ipynb"
    lone.parent.mkdir()
    lone.write_text("{}")
    assert not lab.is_project_notebook(lone, folder=tmp_path / "notebooks")  # no .py beside it


# -- one kernel ------------------------------------------------------------------------------------


def _specs(monkeypatch, specs: dict[str, str]) -> list[str]:
    """Kernelspecs by name -> command; returns the list the fake installer appends to."""
    import ipykernel.kernelspec
    import jupyter_client.kernelspec as ks

    installed: list[str] = []

    class Manager:
        def get_kernel_spec(self, name):
            if name not in specs:
                raise ks.NoSuchKernel(name)
            return type("Spec", (), {"argv": [specs[name], "-m", "ipykernel_launcher"]})()

    def install(kernel_name, prefix, display_name):
        installed.append(kernel_name)
        specs[kernel_name] = sys.executable

    monkeypatch.setattr(ks, "KernelSpecManager", Manager)
    monkeypatch.setattr(ipykernel.kernelspec, "install", install)
    return installed


@pytest.mark.parametrize("command", ["python", "python3", "sys.executable"])
def test_python3_is_the_kernel_when_it_starts_this_interpreter(monkeypatch, command):
    installed = _specs(monkeypatch, {"python3": sys.executable if command == "sys.executable" else command})
    assert lab.ensure_kernel() == "python3" and installed == []


def test_another_environments_python3_gets_a_kernel_of_our_own(monkeypatch):
    installed = _specs(monkeypatch, {"python3": "/another/env/bin/python"})
    assert lab.ensure_kernel() == "sclib" and installed == ["sclib"]


def test_the_real_kernel_starts_this_interpreter():
    from jupyter_client.kernelspec import KernelSpecManager

    assert lab.starts_this_interpreter(KernelSpecManager().get_kernel_spec(lab.ensure_kernel()).argv)
    assert not lab.starts_this_interpreter(["/another/env/bin/python", "-m", "ipykernel_launcher"])


# -- each notebook's test on its own ---------------------------------------------------------------


def _pytest(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", *argv], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_notebook_01_runs_before_the_notebooks_that_read_its_run_whatever_the_order_named():
    result = _pytest("--collect-only", "-q", "notebooks/03_clustering_metrics.ipynb", "notebooks/01_pretrain.ipynb")
    order = [line.split("::")[0] for line in result.stdout.splitlines() if "::" in line]
    assert result.returncode == 0, result.stdout + result.stderr
    first_03 = order.index("notebooks/03_clustering_metrics.ipynb")
    assert set(order[:first_03]) == {"notebooks/01_pretrain.ipynb"} and "notebooks/01_pretrain.ipynb" not in \
        order[first_03:]


@pytest.mark.slow
def test_one_notebook_that_reads_01s_run_passes_on_its_own():
    """The issue: `pytest notebooks/03_clustering_metrics.ipynb` alone failed for want of 01's run (about 90 s)."""
    result = _pytest("notebooks/03_clustering_metrics.ipynb")
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout.splitlines()[-1] and "failed" not in result.stdout.splitlines()[-1]
