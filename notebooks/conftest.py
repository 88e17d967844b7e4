"""nbval runs the notebooks with their default parameters from a clean slate.

Their defaults share the run folders under ``runs/notebooks/`` (01 writes one, 02-06 read it).
A folder left by an earlier session with other parameters (after a preset changed, say) would
be refused on resume, so a test session that collects the notebooks first removes it. pytest
loads this file only when the notebooks are part of the session; other runs are untouched.
"""

import shutil
from pathlib import Path

NOTEBOOK_RUNS = Path(__file__).resolve().parent.parent / "runs" / "notebooks"


def pytest_sessionstart(session):
    shutil.rmtree(NOTEBOOK_RUNS, ignore_errors=True)
