#!/usr/bin/env bash
# Builds the inferd container image from local parts, with podman, on a fresh
# Debian 12 machine: no base image is pulled and no registry is needed.
#
#   deploy/build-image.sh [TAG]
#
# TAG defaults to localhost/inferd:<version in Cargo.toml>, and that default
# is also tagged localhost/inferd:latest. The script
#   1. installs podman, buildah, runc and skopeo with apt-get when missing,
#      and /etc/containers/containers.conf when there is none;
#   2. builds the release binary with `cargo build --release --locked`, or
#      takes the one named by INFERD_BIN;
#   3. stages the build context in target/image/context/: the binary with its
#      debug info stripped, ONNX Runtime (.cache/onnxruntime/, fetched by
#      scripts/setup.sh when absent, or ORT_LIB), every shared library `ldd`
#      lists for the two, the user files and an empty /models;
#   4. builds deploy/Containerfile from that context, and the model image of
#      deploy/models.Containerfile (localhost/inferd-models, the repository's
#      models/ folder, for Kubernetes image volumes);
#   5. writes both as archives that `docker load` and `podman load` read:
#      target/image/inferd-<version>.tar and inferd-models-<version>.tar.
set -euo pipefail
umask 022

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

cargo_field() {
  sed -n "s/^$1 = \"\(.*\)\"$/\1/p" Cargo.toml | head -n 1
}
version=$(cargo_field version)
source_url=$(cargo_field repository)
licenses=$(cargo_field license)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
default_tag="localhost/inferd:$version"
tag=${1:-$default_tag}
models_tag="localhost/inferd-models:$version"
out="$root/target/image"

# 1. The container tools. runc, not crun, and the engine settings of
#    deploy/containers.conf: see that file for why.
packages=(podman buildah runc skopeo binutils)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "build-image: needs the Debian packages ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "build-image: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
if [ ! -e /etc/containers/containers.conf ] && [ "$(id -u)" -eq 0 ]; then
  mkdir -p /etc/containers
  cp deploy/containers.conf /etc/containers/containers.conf
  echo "build-image: wrote /etc/containers/containers.conf"
elif ! grep -q '^runtime = "runc"' /etc/containers/containers.conf 2>/dev/null; then
  echo "build-image: /etc/containers/containers.conf does not choose runc;" \
    "if podman fails, compare it with deploy/containers.conf" >&2
fi
export BUILDAH_ISOLATION=chroot

# 2. The binary.
if [ -n "${INFERD_BIN:-}" ]; then
  binary=$INFERD_BIN
else
  cargo build --release --locked
  binary=target/release/inferd
fi
[ -x "$binary" ] || { echo "build-image: $binary is not an executable" >&2; exit 1; }

# 3. The build context. ONNX Runtime goes beside the binary, the second place
#    inferd looks (src/engine/runtime.rs), so no ORT_DYLIB_PATH is needed.
ort=${ORT_LIB:-}
if [ -z "$ort" ]; then
  scripts/setup.sh >/dev/null
  fetched=(.cache/onnxruntime/libonnxruntime.so.*)
  ort=${fetched[0]}
fi
context="$out/context"
rm -rf "$context"
mkdir -p "$context/runtime/opt/inferd" "$context/runtime/etc" "$context/runtime/models" \
  "$context/app/opt/inferd"
mkdir -m 1777 "$context/runtime/tmp"

objcopy --strip-debug "$binary" "$context/app/opt/inferd/inferd"
cp "$ort" "$context/runtime/opt/inferd/"

# Each library at the path ldd resolved it to, so the loader's default search
# finds it; symbolic links are followed so the image holds real files.
libraries=$( { ldd "$binary"; ldd "$ort"; } | awk '
  $2 == "=>" && $3 ~ /^\// { print $3; next }
  $2 == "=>" { print "MISSING " $1; next }
  $1 ~ /^\// { print $1 }' | sort -u)
if grep -q '^MISSING' <<<"$libraries"; then
  echo "build-image: ldd cannot resolve: $(grep '^MISSING' <<<"$libraries" | cut -d' ' -f2)" >&2
  exit 1
fi
for library in $libraries; do
  mkdir -p "$context/runtime$(dirname "$library")"
  cp -L "$library" "$context/runtime$library"
done

cat >"$context/runtime/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
inferd:x:10001:10001:inferd:/nonexistent:/sbin/nologin
EOF
cat >"$context/runtime/etc/group" <<'EOF'
root:x:0:
inferd:x:10001:
EOF

# 4. The images.
extra_tags=()
[ "$tag" = "$default_tag" ] && extra_tags=(--tag localhost/inferd:latest)
podman build --pull=never --file deploy/Containerfile \
  --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
  --build-arg "SOURCE=$source_url" --build-arg "LICENSES=$licenses" \
  --tag "$tag" "${extra_tags[@]}" "$context"

models_context="$out/models-context"
rm -rf "$models_context"
mkdir -p "$models_context"
cp -R models "$models_context/models"
podman build --pull=never --file deploy/models.Containerfile \
  --build-arg "VERSION=$version" --build-arg "SOURCE=$source_url" \
  --tag "$models_tag" --tag localhost/inferd-models:latest "$models_context"

# 5. The archives.
archive="$out/inferd-$version.tar"
models_archive="$out/inferd-models-$version.tar"
rm -f "$archive" "$models_archive"
podman save --quiet --format docker-archive --output "$archive" "$tag"
podman save --quiet --format docker-archive --output "$models_archive" "$models_tag"

size=$(podman image inspect --format '{{.Size}}' "$tag")
echo "build-image: $tag ($((size / 1000000)) MB), $models_tag"
echo "build-image: archives $archive, $models_archive"
