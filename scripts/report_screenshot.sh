#!/usr/bin/env bash
# Write a run's HTML report and screenshot it in headless chromium (Debian's package), to
# look at what a person sees:  bash scripts/report_screenshot.sh RUN_DIR [OUT_DIR]
set -euo pipefail
run=${1:?usage: report_screenshot.sh RUN_DIR [OUT_DIR]}
out=${2:-$run}
cd "$(dirname "$0")/.."
.venv/bin/compress report "$run" --out "$out/report.html"
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --window-size=1280,4200 \
    --screenshot="$(realpath "$out")/report.png" "file://$(realpath "$out")/report.html" \
    2> >(grep -v -E "dbus|DBus|unexpected operator" >&2)
echo "screenshot: $out/report.png"
