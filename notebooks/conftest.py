"""nbval runs the notebooks with their default parameters, in a folder of their own.

Their default run folders live under ``runs/lab/`` (01 writes one, 02-06 read it), which is
also where interactive JupyterLab runs go. So that the tests neither read nor delete those,
a test session points the notebooks (through ``SCLIB_LAB_RUNS``, read by
``sclib.report.lab_folder``) at a fresh temporary folder. pytest loads this file only when
the notebooks are part of the session.
"""

import os
import shutil
import tempfile

_FOLDER = tempfile.mkdtemp(prefix="sclib-notebook-runs-")


def pytest_sessionstart(session):
    os.environ["SCLIB_LAB_RUNS"] = _FOLDER  # the kernels nbval starts inherit it


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_FOLDER, ignore_errors=True)
