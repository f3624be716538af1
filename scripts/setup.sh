#!/usr/bin/env bash
# Fetches the ONNX Runtime shared library that inferd loads at run time.
#
# The library ships inside the PyPI wheel onnxruntime==1.31.1; this script
# downloads that wheel with pip and extracts only libonnxruntime.so.1.31.1 into
# .cache/onnxruntime/, one of the places inferd looks (see `inferd serve --help`).
# Running it again is cheap: an existing, complete library is kept.
set -euo pipefail

ORT_VERSION=1.31.1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest="$root/.cache/onnxruntime"
lib="libonnxruntime.so.$ORT_VERSION"

if [ -s "$dest/$lib" ]; then
  echo "onnxruntime $ORT_VERSION: $dest/$lib (already present)"
  exit 0
fi

python=${PYTHON:-python3}
command -v "$python" >/dev/null || { echo "setup: python3 with pip is needed to fetch ONNX Runtime" >&2; exit 1; }

mkdir -p "$dest"
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
"$python" -m pip download --quiet --no-deps --only-binary=:all: \
  "onnxruntime==$ORT_VERSION" -d "$wheels"

wheel=$(ls "$wheels"/onnxruntime-"$ORT_VERSION"-*.whl)
"$python" - "$wheel" "$dest" "$lib" <<'PY'
import shutil, sys, zipfile
wheel, dest, lib = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    with z.open(f"onnxruntime/capi/{lib}") as src, open(f"{dest}/{lib}.part", "wb") as out:
        shutil.copyfileobj(src, out)
PY
mv "$dest/$lib.part" "$dest/$lib"
echo "onnxruntime $ORT_VERSION: $dest/$lib"
