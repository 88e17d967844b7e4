"""nbval runs the notebooks with their default parameters, in a folder of their own.

Their default run folders live under ``runs/lab/`` (01 writes one, 02-05 read it, 06 trains its
own sweep), which is also where interactive JupyterLab runs go. So that the tests neither read
nor delete those, each kernel of a test session gets ``sclib.report.notebook.LAB_RUNS`` set to a
fresh temporary folder before its first cell runs (nbval cannot pass parameters; the package
reads no environment variable for it). pytest loads this file only when the notebooks are part
of the session.

Each notebook's test also runs on its own (``pytest notebooks/03_clustering_metrics.ipynb``):
when a notebook that reads 01's run is selected without 01, 01 is executed here first, with
its default parameters, into the same folder; when 01 is selected too, it is moved ahead of
them. If the session fails, the folder is kept and its path printed, so that the run an error
message names can still be looked at.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
MAKES_THE_RUN = "01_pretrain"  # trains the run that the notebooks below read
READS_THE_RUN = ("02_linear_probe", "03_clustering_metrics", "04_embeddings", "05_cluster_images")

_FOLDER = tempfile.mkdtemp(prefix="sclib-notebook-runs-")
# run in every notebook kernel of the session before its first cell (not kept in its history)
POINT_AT_FOLDER = f"import sclib.report.notebook as _lab; _lab.LAB_RUNS = {_FOLDER!r}; del _lab"
_pointed: set[int] = set()  # the kernels already pointed at _FOLDER
_state: dict[str, object] = {"run": None}  # None: not needed yet; True: there; str: why it is missing


def _notebook(item: pytest.Item) -> str | None:
    """The notebook (stem) an nbval cell item belongs to; None for other tests."""
    path = Path(str(getattr(item, "path", item.fspath)))
    return path.stem if path.suffix == ".ipynb" and path.parent == HERE else None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """01 before the notebooks that read its run, whatever order they were named in (stable otherwise)."""
    notebooks = {_notebook(item) for item in items}
    if MAKES_THE_RUN in notebooks:
        _state["run"] = "in session"
        first = [item for item in items if _notebook(item) == MAKES_THE_RUN]
        start = min(i for i, item in enumerate(items) if _notebook(item) in (MAKES_THE_RUN, *READS_THE_RUN))
        rest = [item for item in items if _notebook(item) != MAKES_THE_RUN]
        items[:] = rest[:start] + first + rest[start:]


def _make_the_run() -> object:
    """Execute notebook 01 with its defaults (cwd notebooks/, runs into ``_FOLDER``); True, or why it failed."""
    import nbformat
    from nbclient import NotebookClient

    from sclib.report.lab import ensure_kernel

    nb = nbformat.read(HERE / f"{MAKES_THE_RUN}.ipynb", as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(POINT_AT_FOLDER))
    try:
        NotebookClient(nb, kernel_name=ensure_kernel(), resources={"metadata": {"path": str(HERE)}}).execute()
    except Exception as err:  # a failing cell (CellExecutionError) or a kernel that would not start
        what = f"{err.ename}: {err.evalue}" if hasattr(err, "ename") else f"{type(err).__name__}: {err}"
        return f"notebook {MAKES_THE_RUN}, run first to make the run this notebook reads, failed: {what}"
    return True


@pytest.hookimpl(trylast=True)  # after nbval's own setup has started the notebook's kernel
def pytest_runtest_setup(item: pytest.Item) -> None:
    _point_kernel_at_folder(item)
    if _notebook(item) not in READS_THE_RUN or _state["run"] == "in session":
        return
    if _state["run"] is None:
        _state["run"] = _make_the_run()
    if _state["run"] is not True:
        pytest.fail(str(_state["run"]), pytrace=False)


def _point_kernel_at_folder(item: pytest.Item) -> None:
    """Set LAB_RUNS in the kernel of ``item``'s notebook, once per kernel, before its first cell."""
    kernel = getattr(item.parent, "kernel", None) if _notebook(item) else None
    if kernel is None or id(kernel) in _pointed:
        return
    _pointed.add(id(kernel))
    msg_id = kernel.execute_cell_input(POINT_AT_FOLDER, allow_stdin=False)
    kernel.await_reply(msg_id, timeout=120)
    kernel.await_idle(msg_id, timeout=120)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        shutil.rmtree(_FOLDER, ignore_errors=True)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if exitstatus != 0 and os.path.isdir(_FOLDER):
        terminalreporter.write_line(f"notebook runs kept for a look: {_FOLDER}")
