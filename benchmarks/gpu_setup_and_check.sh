#!/usr/bin/env bash
# Take a bare single-GPU Linux machine to GPU-path results in one go:
#   1. prerequisites: NVIDIA driver >= 580 (PyPI's torch 2.13.0 is a CUDA 13 build), a C compiler
#      and the Python headers (Triton compiles kernels at run time), free disk for the wheels;
#   2. a fresh venv with pip's own configuration switched off (a machine-wide pip.conf or
#      find-links folder could otherwise hand it a CPU torch), `.[gpu,test]` installed against
#      docker/constraints-gpu.txt (the slow step: several GB of CUDA wheels);
#   3. torch.cuda.is_available() in that venv, or stop;
#   4. benchmarks/gpu_check.py, then `pytest -m gpu` (which checks gpu_check's JSON instead of
#      running it twice), both within one time budget (10 minutes by default);
#      then, while the budget lasts, the sampler's engine modes (gpu_sampler_modes.py) and LoRA
#      served merged against vLLM's adapters (lora_serving.py);
#   5. one Markdown table to paste into benchmarks/RESULTS.md.
#
#   benchmarks/gpu_setup_and_check.sh                 # everything (run from anywhere)
#   benchmarks/gpu_setup_and_check.sh --check-only    # step 1 only: seconds, installs nothing
#   benchmarks/gpu_setup_and_check.sh --skip-install  # reuse the venv of an earlier run
#
# Exit status: 0 all passed; 2 bad arguments; 3 a prerequisite is missing; 4 the install failed;
# 5 CUDA is not usable in the venv; 6 gpu_check, a gpu test or a measurement failed or ran out of time.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="$ROOT/.venv-gpu"
PY=""
NVSMI="nvidia-smi"
CHECK_ONLY=0
SKIP_INSTALL=0
BUDGET_S=600
OUT="$ROOT/benchmarks/out/gpu_setup"
MIN_DRIVER=580
MIN_FREE_GB=30

usage() {
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
  cat <<TXT
Options:
  --venv DIR         venv to create or reuse (default .venv-gpu in the repository)
  --python PY        interpreter for the venv (default: python3.12, else python3.11, else python3)
  --nvidia-smi PATH  nvidia-smi to query (default: the one on PATH)
  --check-only       stop after the prerequisites
  --skip-install     reuse --venv as it is
  --budget-s N       seconds for gpu_check + pytest together (default 600)
  --out DIR          where logs, JSON and the table go (default benchmarks/out/gpu_setup)
TXT
}

die() {  # $1 exit status, $2 message: one line on stderr
  echo "gpu_setup_and_check: $2" >&2
  exit "$1"
}

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --check-only) CHECK_ONLY=1 ;;
    --skip-install) SKIP_INSTALL=1 ;;
    --venv|--python|--nvidia-smi|--budget-s|--out)
      [ $# -ge 2 ] || die 2 "$1 needs a value (see --help)"
      case "$1" in
        --venv) VENV=$2 ;; --python) PY=$2 ;; --nvidia-smi) NVSMI=$2 ;; --out) OUT=$2 ;;
        --budget-s) [[ "$2" =~ ^[0-9]+$ ]] && [ "$2" -ge 60 ] || die 2 "--budget-s must be a whole number ≥ 60, got '$2'"
                    BUDGET_S=$2 ;;
      esac
      shift ;;
    *) die 2 "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

# ---- 1. prerequisites ---------------------------------------------------------------------------
command -v "$NVSMI" >/dev/null 2>&1 || die 3 "no NVIDIA driver: '$NVSMI' not found (install the driver, ≥ $MIN_DRIVER, for CUDA 13)"
if ! smi=$("$NVSMI" --query-gpu=driver_version,name,memory.total --format=csv,noheader 2>&1); then
  die 3 "nvidia-smi failed: $(echo "$smi" | head -n 1)"
fi
smi=$(echo "$smi" | head -n 1)
DRIVER=$(echo "$smi" | cut -d, -f1 | tr -d ' ')
GPU_NAME=$(echo "$smi" | cut -d, -f2 | sed 's/^ *//')
GPU_MEM=$(echo "$smi" | cut -d, -f3 | sed 's/^ *//')
[[ "$DRIVER" =~ ^[0-9]+(\.[0-9]+)*$ ]] || die 3 "cannot read the driver version from nvidia-smi: '$smi'"
[ "${DRIVER%%.*}" -ge "$MIN_DRIVER" ] || die 3 "NVIDIA driver $DRIVER is older than $MIN_DRIVER: PyPI's torch 2.13.0 is a CUDA 13 build and needs driver ≥ $MIN_DRIVER"

CC_BIN=${CC:-}
[ -n "$CC_BIN" ] || CC_BIN=$(command -v cc || command -v gcc || command -v clang || true)
[ -n "$CC_BIN" ] && command -v "$CC_BIN" >/dev/null 2>&1 || die 3 "no C compiler (cc, gcc or clang): Triton compiles its kernels at run time; install gcc"

if [ -z "$PY" ]; then
  for cand in python3.12 python3.11 python3; do
    if "$cand" -c 'import sys' >/dev/null 2>&1; then PY=$cand; break; fi
  done
fi
[ -n "$PY" ] && "$PY" -c 'import sys' >/dev/null 2>&1 || die 3 "no usable Python interpreter (tried ${PY:-python3.12, python3.11, python3})"
PY_VER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
"$PY" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 13) else 1)' \
  || die 3 "Python $PY_VER ($PY): vLLM 0.32 needs Python 3.10 to 3.13"
inc=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$inc/Python.h" ] || die 3 "no Python headers for $PY (Python.h not in $inc): Triton needs them; install python$PY_VER-dev"
"$PY" -c 'import venv, ensurepip' >/dev/null 2>&1 || die 3 "$PY cannot create venvs with pip (install python$PY_VER-venv)"

mkdir -p "$OUT" || die 3 "cannot create $OUT"
free_kb=$(df -Pk "$(dirname "$VENV")" | awk 'NR==2 {print $4}')
if [ "$SKIP_INSTALL" -eq 0 ] && [ "${free_kb:-0}" -lt $((MIN_FREE_GB * 1024 * 1024)) ]; then
  die 3 "only $((free_kb / 1024 / 1024)) GB free under $(dirname "$VENV"): the CUDA wheels need about $MIN_FREE_GB GB"
fi
echo "prerequisites ok: $GPU_NAME ($GPU_MEM), driver $DRIVER, $CC_BIN, Python $PY_VER ($PY)"
[ "$CHECK_ONLY" -eq 1 ] && exit 0

# ---- 2. venv + install --------------------------------------------------------------------------
cd "$ROOT" || die 3 "cannot enter $ROOT"
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1  # no machine or user pip configuration
t_install=$SECONDS
if [ "$SKIP_INSTALL" -eq 1 ]; then
  [ -x "$VENV/bin/python" ] || die 4 "--skip-install: no venv at $VENV"
else
  echo "installing .[gpu,test] into $VENV (several GB of CUDA wheels; log: $OUT/install.log)"
  { "$PY" -m venv "$VENV" \
      && "$VENV/bin/python" -m pip install --isolated --no-input -U pip \
      && "$VENV/bin/python" -m pip install --isolated --no-input -c docker/constraints-gpu.txt -e '.[gpu,test]'
  } >"$OUT/install.log" 2>&1 || die 4 "install failed: $(grep -iE 'error' "$OUT/install.log" | tail -n 1) (full log: $OUT/install.log)"
fi
t_install=$((SECONDS - t_install))

# ---- 3. CUDA in the venv ------------------------------------------------------------------------
VPY="$VENV/bin/python"
cuda=$("$VPY" -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())' 2>&1 | tail -n 1)
[ "${cuda##* }" = "True" ] || die 5 "torch.cuda.is_available() is not True in $VENV ($cuda): check the driver against CUDA 13"
TORCH_VER=${cuda%% *}
VLLM_VER=$("$VPY" -c 'import vllm; print(vllm.__version__)' 2>/dev/null | tail -n 1)
[ -n "$VLLM_VER" ] || VLLM_VER="not importable"

# ---- 4. checks within the budget ----------------------------------------------------------------
# Ray's root stays short (its socket paths must fit in 107 bytes) and private, wherever the checkout is.
export TMPDIR="$ROOT/.tmp" RAY_TMPDIR="/tmp/gdro-ray-$(id -u)" HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
mkdir -p "$TMPDIR" && mkdir -p -m 700 "$RAY_TMPDIR"
start=$SECONDS
left() { echo $((BUDGET_S - (SECONDS - start))); }
status=0
t0=$SECONDS
timeout "$(left)" "$VPY" benchmarks/gpu_check.py --out "$OUT/gpu_check.json" >"$OUT/gpu_check.log" 2>&1
rc_check=$?
t_check=$((SECONDS - t0))
[ "$rc_check" -eq 0 ] || status=6
tests=$(grep -l 'mark.gpu' tests/*/*.py | tr '\n' ' ')
t0=$SECONDS
rc_tests=124
if [ "$(left)" -gt 10 ]; then
  # the gpu test of gpu_check.py validates this run's JSON instead of running it again
  GDRO_GPU_CHECK_JSON="$OUT/gpu_check.json" timeout "$(left)" "$VPY" -m pytest -m gpu -q -p no:cacheprovider \
    --junitxml "$OUT/pytest-gpu.xml" $tests >"$OUT/pytest-gpu.log" 2>&1
  rc_tests=$?
fi
t_tests=$((SECONDS - t0))
[ "$rc_tests" -eq 0 ] || status=6
# the sampler's engine modes last: the gpu tests matter more when the budget is short
rc_modes=skipped
if [ "$(left)" -gt 60 ]; then
  timeout "$(left)" "$VPY" benchmarks/gpu_sampler_modes.py --out "$OUT/gpu_sampler_modes.json" \
    >"$OUT/gpu_sampler_modes.log" 2>&1
  rc_modes=$?
fi
[ "$rc_modes" = skipped ] || [ "$rc_modes" -eq 0 ] || status=6
# LoRA served as merged weights against vLLM's own adapters (one round of each)
rc_lora=skipped
if [ "$(left)" -gt 90 ]; then
  timeout "$(left)" "$VPY" benchmarks/lora_serving.py --models qwen3-0.6b --rounds 1 --versions 3 \
    --out "$OUT/lora_serving.json" >"$OUT/lora_serving.log" 2>&1
  rc_lora=$?
fi
[ "$rc_lora" = skipped ] || [ "$rc_lora" -eq 0 ] || status=6

# ---- 5. the table -------------------------------------------------------------------------------
"$VPY" - "$OUT" "$rc_check" "$rc_tests" "$t_install" "$t_check" "$t_tests" "$DRIVER" "$TORCH_VER" "$VLLM_VER" "$rc_modes" "$rc_lora" <<'PYTHON'
import json, sys, time
from pathlib import Path
import xml.etree.ElementTree as ET

out, rc_check, rc_tests, t_install, t_check, t_tests, driver, torch_ver, vllm_ver, rc_modes, rc_lora = sys.argv[1:]
out = Path(out)
rows = [("date (UTC)", time.strftime("%Y-%m-%d %H:%M", time.gmtime())), ("driver", driver),
        ("torch / vLLM", f"{torch_ver} / {vllm_ver}"), ("install", f"{t_install} s")]
check = out / "gpu_check.json"
if rc_check == "0" and check.is_file():
    r = json.loads(check.read_text())
    lr = r["learner"]
    rows += [("GPU", f"{r['device']} × {r['gpus']}"),
             ("model (N without input embedding)", f"{r['params'] / 1e6:.0f} M ({r['flop_params'] / 1e6:.0f} M)"),
             ("learner step (median)", f"{lr['step_s']:.3f} s, {lr['tokens_per_s']:,.0f} tokens/s"),
             ("MFU", f"{lr['mfu']:.1%}" if lr.get("mfu") is not None else "n/a (card not in PEAK_BF16)"),
             ("learner peak memory", f"{lr.get('max_memory_gb', 0):.1f} GiB"),
             ("NCCL weight group, 1 rank", "ok" if r.get("nccl_smoke", {}).get("ok") else "not run")]
    s = r.get("sampler")
    if isinstance(s, dict):
        p = r["publish"]
        rows += [("vLLM generate", f"{s['generate_tokens_per_s']:,.0f} tokens/s (start {s['vllm_start_s']:.0f} s)"),
                 (f"publish {p['nbytes'] / 2**20:,.0f} MiB ({p['backend']})",
                  f"gather {p['gather_s']:.2f} s + stage {p['stage_s']:.2f} s + broadcast {p['broadcast_s']:.2f} s, "
                  f"load {p['receive_load_s']:.2f} s")]
    else:
        rows.append(("vLLM sampler", str(s)))
else:
    rows.append(("gpu_check.py", "timed out" if rc_check == "124" else f"failed (exit {rc_check}), see gpu_check.log"))
rows.append(("gpu_check.py time", f"{t_check} s"))
modes = out / "gpu_sampler_modes.json"
if modes.is_file():
    for m in json.loads(modes.read_text())["modes"]:
        value = (f"start {m['start_s']:.0f} s, {m['tokens_per_s']:,.0f} tokens/s ({m.get('speed_vs_eager', 0):.2f}× eager)"
                 if m["status"] == "ok" else f"{m['status']}: {m.get('error', '')}")
        rows.append((f"sampler: {m['name']}", value))
else:
    why = {"skipped": "not run (budget spent)", "124": "timed out"}.get(rc_modes, f"exit {rc_modes}, see its log")
    rows.append(("gpu_sampler_modes.py", why))
lora = out / "lora_serving.json"
if lora.is_file():
    for r in json.loads(lora.read_text())["results"]:
        rows.append((f"LoRA served {r['arm']} (0.6 B, r=8)",
                     f"publish {r['prepare_s'] + r['load_s']:.2f} s ({r['publish_mb']:,.0f} MB), generate "
                     f"{r['tokens_per_s']:,.0f} tokens/s; greedy agreement {r['token_agreement']:.3f}"))
else:
    why = {"skipped": "not run (budget spent)", "124": "timed out"}.get(rc_lora, f"exit {rc_lora}, see its log")
    rows.append(("lora_serving.py", why))
junit = out / "pytest-gpu.xml"
if junit.is_file():
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n, f, e, sk = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    rows.append(("pytest -m gpu", f"{n - f - e - sk} passed, {f + e} failed, {sk} skipped ({t_tests} s)"))
else:
    rows.append(("pytest -m gpu", "not run (budget spent)" if rc_tests == "124" else f"exit {rc_tests}"))
width = max(len(k) for k, _ in rows)
table = [f"| {'GPU path, first run':<{width}} | result |", f"|{'-' * (width + 2)}|---|"]
table += [f"| {k:<{width}} | {v} |" for k, v in rows]
(out / "results_table.md").write_text("\n".join(table) + "\n")
print("\n".join(table))
PYTHON
echo "logs, JSON and the table: $OUT"
[ "$status" -eq 0 ] || echo "gpu_setup_and_check: a check failed (gpu_check exit $rc_check, sampler modes exit $rc_modes, LoRA serving exit $rc_lora, pytest exit $rc_tests); see $OUT" >&2
exit "$status"
