"""JupyterLab and the notebooks' kernel: what ``scripts/lab.sh`` and the study runner share.

This module imports neither torch nor the rest of sclib, because JupyterLab's server loads it
at start (``.jupyter/jupyter_server_config.py``) and on every save.

One kernel: papermill (the study runner and the README's commands), nbval and JupyterLab all
start the notebooks in the kernel of the interpreter sclib is installed in. That is the
standard ``python3`` kernel whenever it starts this interpreter (ipykernel's own spec does,
as does any spec whose command is plain ``python``); only where ``python3`` is another
environment's (a user-wide kernelspec wins over the environment's) is a ``sclib`` kernel
installed into this environment, and Lab then lists that one instead.

Clean saves: every notebook in ``notebooks/`` is a jupytext pair, and Lab writes both files on
each save. :func:`scrub_paired_notebook` (a contents-manager pre-save hook) keeps the
``.ipynb`` half to what the committed file holds, the inputs, so saving an executed notebook
leaves ``git diff`` empty unless its inputs changed.
"""

from __future__ import annotations

import copy
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

KERNEL_NAME = "sclib"
NATIVE_KERNEL = "python3"

# Notebook metadata the committed .ipynb keeps: the keys jupytext also writes into the .py's
# header. The kernel adds language_info on every run; Lab and its extensions add more.
KEPT_NOTEBOOK_METADATA = ("jupytext", "kernelspec")
# Cell metadata that is view or run state, left out of the .py by jupytext (its default filter).
RUNTIME_CELL_METADATA = ("autoscroll", "collapsed", "scrolled", "trusted", "execution", "ExecuteTime")


class KernelError(RuntimeError):
    """No kernel for this interpreter could be found or installed; the message says how to add one."""


def notebooks_dir() -> Path:
    """The repository's notebooks/ (next to the package in a checkout or editable install)."""
    return Path(__file__).resolve().parents[2] / "notebooks"


def starts_this_interpreter(argv: list[str]) -> bool:
    """Whether a kernelspec's command runs ``sys.executable``.

    jupyter_client replaces a bare ``python`` / ``pythonX`` / ``pythonX.Y`` with the interpreter
    of the process that launches the kernel, so such a spec is ours for papermill and for a Lab
    server started from this environment.
    """
    if not argv:
        return False
    major, minor = sys.version_info[:2]
    return argv[0] in ("python", f"python{major}", f"python{major}.{minor}") or (
        os.path.abspath(argv[0]) == os.path.abspath(sys.executable))


def ensure_kernel(name: str = KERNEL_NAME) -> str:
    """The name of a kernelspec that starts this very interpreter, installed into ``sys.prefix`` if need be.

    ``python3`` when it is ours (the usual case: nothing is installed, and Lab, papermill and
    nbval share one kernel). Otherwise papermill would start whatever ``python3`` the Jupyter
    paths name first, maybe another environment without sclib, so ``name`` is used, installed
    if missing; if ``name`` too is taken by another interpreter, a name unique to this
    interpreter is.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    def ours(kernel: str) -> bool | None:
        try:
            spec = KernelSpecManager().get_kernel_spec(kernel)
        except NoSuchKernel:
            return None
        return starts_this_interpreter(list(spec.argv))

    if ours(NATIVE_KERNEL):
        return NATIVE_KERNEL
    candidates = [name, fallback_kernel_name(name, sys.executable)]
    for kernel in candidates:
        state = ours(kernel)
        if state:
            return kernel
        if state is None or kernel == candidates[-1]:
            from ipykernel.kernelspec import install

            try:
                install(kernel_name=kernel, prefix=sys.prefix, display_name=f"Python (sclib, {Path(sys.prefix).name})")
            except OSError as err:
                raise KernelError(f"cannot install the Jupyter kernel {kernel!r} into {sys.prefix}: {err}") from None
            if ours(kernel):
                return kernel
    raise KernelError(f"no Jupyter kernel for {sys.executable} could be set up; install one with "
                      f"`{sys.executable} -m ipykernel install --sys-prefix --name {name}`")


def fallback_kernel_name(name: str, executable: str) -> str:
    """``name-XXXXXXXX``, the same for one interpreter in every process (a digest of its path).

    Python's ``hash()`` of a string is salted per process, so a name made from it differed on
    every study and installed one more kernelspec each time.
    """
    return f"{name}-{hashlib.sha256(os.path.abspath(executable).encode()).hexdigest()[:8]}"


def committed_form(notebook: dict[str, Any]) -> dict[str, Any]:
    """A copy of a notebook as the repository keeps it: no outputs, no execution counts, no run state."""
    nb = copy.deepcopy(notebook)
    nb["metadata"] = {k: v for k, v in nb.get("metadata", {}).items() if k in KEPT_NOTEBOOK_METADATA}
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k not in RUNTIME_CELL_METADATA}
    return nb


def is_project_notebook(os_path: str | Path, folder: Path | None = None) -> bool:
    """Whether ``os_path`` is one of the repository's paired notebooks (``notebooks/*.ipynb`` with its ``.py``).

    Only these are scrubbed: a notebook elsewhere (an executed study in ``runs/``) keeps its outputs.
    """
    path = Path(os_path).resolve()
    folder = (folder or notebooks_dir()).resolve()
    return path.suffix == ".ipynb" and path.parent == folder and path.with_suffix(".py").exists()


def scrub_paired_notebook(model: dict[str, Any], path: str, contents_manager: Any, **kwargs: Any) -> None:
    """Jupyter's ``ContentsManager.pre_save_hook``: save the repository's paired ``.ipynb`` files in committed form.

    The outputs of an interactive run stay in the open notebook (and the figures in ``runs/``),
    not in ``notebooks/``; reopening the notebook shows its inputs only, as a plain jupytext
    notebook would. Other files are left alone.
    """
    if model.get("type") != "notebook" or not model.get("content"):
        return
    os_path = contents_manager._get_os_path(path) if hasattr(contents_manager, "_get_os_path") else path
    if is_project_notebook(os_path):
        model["content"] = committed_form(model["content"])
