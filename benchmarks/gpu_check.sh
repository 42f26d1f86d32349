#!/usr/bin/env bash
# The check of pyml's CUDA backend on a real NVIDIA GPU, in one command and under 8 minutes (H100/H200):
#   bash benchmarks/gpu_check.sh [OUTDIR]
# Needs: an NVIDIA GPU, CuPy, a C++ compiler, the build requirements (setuptools, pybind11, Cython, SciPy) and
# the test extra (pytest, hypothesis); PyTorch, faiss-gpu and implicit are used as peers where installed.
# No network: pyml is built from this checkout without build isolation, into a virtual environment that sees
# the system's packages. Steps (each under a timeout, all under one deadline):
#   1. build   2. pytest -m gpu   3. pyml verify --backends cuda   4. pyml bench <loop> --backends cuda cpp
# then one summary table of the cuda rows beside the best peer. Exit status: 0 only if every step passed and
# no benchmark row reported an error; any wrong result fails loudly (the step's output is shown).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-${TMPDIR:-/tmp}/pyml-gpu-check}
DEADLINE=${GPU_CHECK_SECONDS:-480}
mkdir -p "$OUT"
fail=0

die() { echo "gpu_check: $*" >&2; exit 2; }
left() { echo $((DEADLINE - SECONDS)); }
step() {  # step NAME MAX_SECONDS CMD...: run under min(MAX, time left), log to $OUT/NAME.log
  local name=$1 max=$2; shift 2
  local t; t=$(left); [ "$t" -gt "$max" ] && t=$max
  if [ "$t" -le 5 ]; then echo "FAIL $name: no time left in the ${DEADLINE}s budget"; fail=1; return 1; fi
  echo "== $name (timeout ${t}s)"
  local start=$SECONDS rc
  timeout --kill-after=10 "$t" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  tail -n 25 "$OUT/$name.log"
  if [ $rc -eq 0 ]; then echo "ok   $name ($((SECONDS - start))s)"
  else echo "FAIL $name (exit $rc$([ $rc -eq 124 ] && echo ', timed out'), $((SECONDS - start))s; log: $OUT/$name.log)"; fail=1; fi
  return $rc
}

# ---------------------------------------------------------------------------------------- 0. is there a GPU?
command -v "$PY" >/dev/null 2>&1 || die "no $PY on PATH"
probe=$("$PY" - 2>&1 <<'EOF'
try:
    import cupy
except Exception as exc:
    raise SystemExit(f"no CUDA device: cupy is not importable ({type(exc).__name__}: {exc})")
try:
    n = cupy.cuda.runtime.getDeviceCount()
except Exception as exc:
    raise SystemExit(f"no CUDA device: the CUDA runtime found none ({type(exc).__name__}: {exc})")
if n < 1:
    raise SystemExit("no CUDA device: cupy sees 0 devices")
p = cupy.cuda.runtime.getDeviceProperties(0)
name = p["name"].decode() if isinstance(p["name"], bytes) else p["name"]
print(f"{name}, sm_{p['major']}{p['minor']}, {p['totalGlobalMem'] / 2**30:.0f} GiB, CuPy {cupy.__version__}")
EOF
) || die "$probe — nothing to check on this machine (run it where an NVIDIA GPU, its driver and CuPy are installed)"
echo "gpu_check: $probe; results in $OUT"

# ---------------------------------------------------------------------------------------- 1. build
venv="$OUT/venv"
step build 300 bash -c "
  set -e
  [ -x '$venv/bin/python' ] || '$PY' -m venv --system-site-packages '$venv'
  '$venv/bin/python' -m pip install --no-build-isolation --no-deps --no-index -e . -q
  '$venv/bin/python' -c 'import pyml, pyml._cpp._info; print(pyml.backends())'
" || { echo "gpu_check: the build failed; nothing else can run" >&2; exit 1; }
PYML="$venv/bin/python"

# ---------------------------------------------------------------------------------------- 2-3. correctness
"$venv/bin/pyml" info >"$OUT/info.log" 2>&1
grep -iE "cuda|gpu" "$OUT/info.log" | head -5
step gpu_tests 150 "$PYML" -m pytest -m gpu -q -p no:cacheprovider -o addopts="--strict-markers" tests
step verify 60 "$venv/bin/pyml" verify --backends cuda

# ---------------------------------------------------------------------------------------- 4. benchmarks
for loop in kmeans conv attention mf mdp; do
  step "bench_$loop" 45 "$venv/bin/pyml" bench "$loop" --backends cuda cpp --repeat 3 --quiet \
    --json "$OUT/bench_$loop.json"
done

# ---------------------------------------------------------------------------------------- summary
"$PYML" - "$OUT" <<'EOF' || fail=1
import glob, json, os, sys

rows = []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "bench_*.json"))):
    with open(path) as f:
        rows += json.load(f)["rows"]
errors = [r for r in rows if r.get("error")]
gpu = [r for r in rows if r["device"] != "cpu" or "cuda" in r["label"]]
print(f"\n== summary: {len(gpu)} GPU rows of {len(rows)} ({len(errors)} with an error)")
fmt = "{:<34} {:<44} {:<34} {:>12} {:>8} {:>9}"
print(fmt.format("kernel", "problem", "label", "time", "% roof", "vs peer"))
for r in gpu:
    t = r["seconds"]
    t = f"{t * 1e6:.1f} us" if t < 1e-3 else f"{t * 1e3:.2f} ms"
    roof = "-" if r.get("roof_pct") is None else f"{r['roof_pct']:.0f}%"
    peer = "-" if r.get("vs_best_peer") is None else f"{r['vs_best_peer']:.2f}x"
    print(fmt.format(r["kernel"][:34], r["problem"][:44], r["label"][:34], t, roof, peer))
for r in errors:
    print(f"ERROR {r['kernel']} / {r['problem']} / {r['label']}: {r['error']}")
sys.exit(1 if errors or not gpu else 0)
EOF

echo
if [ $fail -ne 0 ]; then echo "gpu_check: FAILED (logs in $OUT)"; exit 1; fi
echo "gpu_check: all steps passed in ${SECONDS}s (logs and JSON in $OUT)"
