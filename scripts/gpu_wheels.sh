#!/usr/bin/env bash
# Download the small wheels that benchmarks/gpu_validation.py (and `compress calibrate`)
# need on the project's GPU machine (Python 3.12, x86_64, no network, no pydantic or
# platformdirs) into .whl/ at the repository root, ignored by git. The versions are the
# ones installed in .venv, so the GPU machine imports what the tests here ran against.
#   bash scripts/gpu_wheels.sh            # then carry .whl (README: "Validating on a GPU")
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PKGS=(pydantic pydantic-core annotated-types typing-inspection typing-extensions platformdirs)
[[ -x $VENV/bin/python ]] || { echo "gpu_wheels: no $VENV; run scripts/setup.sh first" >&2; exit 2; }
specs=()
for p in "${PKGS[@]}"; do
    v=$("$VENV/bin/python" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$p")
    specs+=("$p==$v")
done
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo /.whl/ >> "$exclude"
rm -rf .whl
python3 -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl "${specs[@]}"
ls -1 .whl
du -sh .whl
