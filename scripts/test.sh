#!/usr/bin/env bash
# Run the test suite (sets up .venv first if needed). Extra args go to pytest,
# e.g. `bash scripts/test.sh -m "not slow"` for the fast tests only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check compress tests benchmarks
exec .venv/bin/python -m pytest "$@"
