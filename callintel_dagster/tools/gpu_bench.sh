#!/usr/bin/env bash
# The GPU section of the bench on a CUDA machine, in under 5 minutes: random-weight wav2vec2-base and
# Whisper-large-v3-shaped models built from config (nothing is downloaded), tone and batched ASR
# throughput through the project's engines. Run from the repository root with the project installed
# (a CUDA build of torch; ctranslate2's wheel carries CUDA). Results: bench/gpu_results.{json,md}.
set -euo pipefail
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')"
exec timeout "${GPU_BENCH_TIMEOUT_S:-290}" "$PYTHON" -m callintel_dagster.tools.cli bench --gpu --output-dir "${1:-bench}"
