#!/usr/bin/env bash
# JupyterLab on the repository with the project's settings (.jupyter/): the file browser's root
# is the repository (runs/ and results/ are browsable), a notebook's .py opens as a notebook,
# the launcher offers one kernel (this environment's), and saving leaves notebooks/ clean.
# Needs `.venv/bin/python -m pip install -e '.[lab]'`. Arguments go to `jupyter lab`
# (e.g. --no-browser --port 8890).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/jupyter-lab ]; then
  echo "lab: JupyterLab is not installed in .venv; run: .venv/bin/python -m pip install -e '.[lab]'" >&2
  exit 1
fi
export JUPYTER_CONFIG_PATH="$PWD/.jupyter${JUPYTER_CONFIG_PATH:+:$JUPYTER_CONFIG_PATH}"
exec .venv/bin/jupyter lab --ServerApp.root_dir="$PWD" "$@"
