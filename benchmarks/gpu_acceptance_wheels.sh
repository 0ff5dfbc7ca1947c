#!/usr/bin/env bash
# Wheels for benchmarks/gpu_acceptance.py on a GPU machine with no package index.
#
# That machine has Python 3.12, torch (CUDA), nvidia-ml-py, psutil, pyarrow, rich, protobuf
# and grpcio; it lacks polars, msgspec, dash, plotly, dash-ag-grid and their dependencies.
# This downloads those (the versions this checkout's .venv tested) for CPython 3.12 on
# manylinux_2_28_x86_64 into .gpu-wheels/ (ignored through .git/info/exclude):
#   core/        polars, msgspec, plotly and their dependencies: all the script imports
#                (about 63 MiB, within a 64 MiB carry to a device machine);
#   dash/        dash, dash-ag-grid and the rest of their dependencies: to serve the dashboard there;
#   if-missing/  numpy, installed there only when the machine has none.
# accelscope itself is installed there from the working tree with --no-deps. Then it prints
# the command to run on the GPU machine.
#
#     bash benchmarks/gpu_acceptance_wheels.sh [PYTHON]     # PYTHON: whose pip downloads (.venv/bin/python)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
DEST=.gpu-wheels
PLATFORM=(--python-version 3.12 --implementation cp --abi cp312 --platform manylinux_2_28_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --only-binary=:all:)

# The version this venv tested, when it has the package; else pip picks.
pin() {
  local v
  v=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1" 2>/dev/null) && echo "$1==$v" || echo "$1"
}

mkdir -p "$DEST/core" "$DEST/dash" "$DEST/if-missing"
grep -qxF "/$DEST/" .git/info/exclude 2>/dev/null || echo "/$DEST/" >> .git/info/exclude

failed=()
get() {  # get DIR [pip download args...]
  local dir=$1; shift
  echo "downloading $* into $DEST/$dir/" >&2
  "$PY" -m pip download --quiet --dest "$DEST/$dir" "${PLATFORM[@]}" "$@" 2> >(grep -v "is neither a file nor a directory" >&2) || failed+=("$*")
}
get core "$(pin polars)" "$(pin msgspec)" "$(pin plotly)"
get dash "$(pin dash)" "$(pin dash-ag-grid)"
get if-missing --no-deps "$(pin numpy)"
# The machine has these; core/ holds each wheel once.
for have in psutil pyarrow rich protobuf grpcio nvidia_ml_py torch numpy; do
  rm -f "$DEST"/core/"$have"-*.whl "$DEST"/dash/"$have"-*.whl
done
for w in "$DEST"/core/*.whl; do rm -f "$DEST/dash/$(basename "$w")"; done

for dir in core dash if-missing; do
  echo "$DEST/$dir ($(du -sh "$DEST/$dir" | cut -f1)):" >&2
  find "$DEST/$dir" -name '*.whl' -printf '  %P\n' | sort >&2
done
if [ ${#failed[@]} -ne 0 ]; then
  printf 'MISSING: pip could not fetch: %s\n' "${failed[@]}" >&2
fi

cat <<'EOF'
# On the GPU machine, from the repository root (the working tree, with .gpu-wheels/ in it):
set -e
D=/tmp/gpu-deps
PY=${PY:-python3.12}
$PY -m pip install --no-index --no-deps --target "$D" .gpu-wheels/core/*.whl
ls .gpu-wheels/dash/*.whl >/dev/null 2>&1 && $PY -m pip install --no-index --no-deps --target "$D" .gpu-wheels/dash/*.whl
$PY -c "import numpy" 2>/dev/null || $PY -m pip install --no-index --no-deps --target "$D" .gpu-wheels/if-missing/*.whl
export PYTHONPATH="$D${PYTHONPATH:+:$PYTHONPATH}"
$PY -m pip install --no-index --no-deps --no-build-isolation --target "$D" . \
  || { echo "no setuptools>=77 there: laying accelscope out as pyproject's package-dir does"; rm -rf "$D/accelscope";
       cp -r profiler "$D/accelscope"; for p in collectors traces dashboard; do cp -r "$p" "$D/accelscope/$p"; done; }
$PY -c "import accelscope, polars, msgspec, plotly; print('accelscope', accelscope.__version__, 'from', accelscope.__file__)"
export OUT=${OUT:-/tmp/gpu-acceptance-out}
timeout 540 $PY benchmarks/gpu_acceptance.py
EOF
[ ${#failed[@]} -eq 0 ]
