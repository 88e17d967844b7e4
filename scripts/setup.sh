#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv and install sclib into it.
# Idempotent: a second run only reinstalls when pyproject.toml changed. Works offline except
# for the package registry; torch and torchvision come from the machine's pip configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: sclib needs Python >= 3.11; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
stamp=.venv/.sclib-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! .venv/bin/python -c 'import sclib' 2>/dev/null; then
  echo "setup: installing sclib and its dependencies into .venv (the first time takes a few minutes)"
  .venv/bin/python -m pip install --quiet --editable '.[test]'
  echo "$want" > "$stamp"
fi
.venv/bin/python - <<'PY'
import torch, torchvision, sclib
print(f"setup: sclib {sclib.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"CUDA {'available' if torch.cuda.is_available() else 'not available'}")
PY
