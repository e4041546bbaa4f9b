#!/usr/bin/env bash
# Set everything up (pinned venv + offline demo assets) and run the demo recipe end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/compress run recipes/demo-bbc-news.yaml "$@"
