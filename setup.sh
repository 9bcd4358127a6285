#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with medlens and its test tools.
# torch is pinned to 2.13.0: on CPU machines pip takes the CPU wheel; an unpinned torch
# would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q "torch==2.13.0" -e ".[dev,imagenet,stain]"
.venv/bin/python -c "import medlens, torch, monai; print(f'medlens {medlens.__version__} ready (torch {torch.__version__}, monai {monai.__version__})')"
