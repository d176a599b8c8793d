#!/usr/bin/env bash
# Regenerate the pinned dependency sets of the two images from pyproject.toml.
#
#   docker/compile-constraints.sh        # needs `uv` on PATH and PyPI access
#
# Both sets are resolved for the image's platform (linux x86_64, manylinux_2_28), not for the
# machine running this script. The CPU set takes torch 2.13.0+cpu from a local wheel folder
# (CPU_WHEELS, default /opt/wheels), because PyPI hosts only CUDA torch builds; the image gets the
# same wheel from the PyTorch CPU index. The GPU set takes everything from PyPI.
set -euo pipefail
export UV_PYTHON_DOWNLOADS=never  # resolve for the target version; never fetch an interpreter
cd "$(dirname "$0")/.."
CPU_WHEELS=${CPU_WHEELS:-/opt/wheels}
common=(--python-platform x86_64-manylinux_2_28 --index-url https://pypi.org/simple
        --no-config --no-annotate --no-header)

header() {  # $1: flavour, $2: python version, $3: extras
  cat <<TXT
# Pinned dependency set of the $1 image (docker/Dockerfile.$1): Python $2, linux x86_64.
# Resolved from pyproject.toml with extras [$3] by docker/compile-constraints.sh; do not edit by hand.
# Use: pip install -c docker/constraints-$1.txt '.[$3]'
TXT
}

{ header cpu 3.11 vllm,gguf
  uv pip compile pyproject.toml --extra vllm --extra gguf --python-version 3.11 \
    --find-links "$CPU_WHEELS" "${common[@]}"; } > docker/constraints-cpu.txt

{ header gpu 3.12 gpu
  uv pip compile pyproject.toml --extra gpu --python-version 3.12 "${common[@]}"; } > docker/constraints-gpu.txt

echo "wrote docker/constraints-cpu.txt ($(grep -c '==' docker/constraints-cpu.txt) pins)," \
     "docker/constraints-gpu.txt ($(grep -c '==' docker/constraints-gpu.txt) pins)"
