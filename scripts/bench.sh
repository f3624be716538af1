#!/usr/bin/env bash
# Runs inferd's serving benchmark and prints its tables and ratios.
#
# Builds the heavy benchmark models (benches/make_mlp.py, in a virtual
# environment with training/requirements.txt) into .cache/bench-models, then
# runs `cargo bench --bench serving`. Extra arguments go to the benchmark:
#   --window-secs N   measured seconds per load point (default 5)
#   --rounds N        alternating rounds behind each ratio (default 3)
#   --mlp-threads N   intra-op threads of the heavy model (default: the server's,
#                     all cores but one)
#   --engine-nice N   --engine-nice of the heavy models' servers (default -5)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet -r training/requirements.txt
models=.cache/bench-models
if [ ! -s "$models/wide/1/model.onnx" ]; then
  .venv/bin/python benches/make_mlp.py "$models" >/dev/null
fi
cargo bench --bench serving -- --models "$models" "$@"
