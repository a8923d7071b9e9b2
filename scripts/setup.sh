#!/usr/bin/env bash
# Installs everything the system needs on a fresh Debian machine, idempotently:
#   system packages (redis-server), the virtual environment (.venv), generated gRPC code (build/gen),
#   the ONNX model export (.cache/models, made once in a separate torch environment), and the PCA
#   whitening learned from Debian picture packages (.cache/models/*-whiten512.*, made once).
#
#   usage: scripts/setup.sh [--dev]     (--dev adds the test and lint tools)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dev=0
[ "${1:-}" = "--dev" ] && dev=1
log() { printf '[setup] %s\n' "$*" >&2; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing system packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

apt_install redis-server
[ $dev -eq 1 ] && apt_install docker-compose chromium fonts-dejavu-core

# --- Python environment -------------------------------------------------------------------------
req=requirements.txt
[ $dev -eq 1 ] && req=requirements-dev.txt
stamp=.venv/.installed-$(cat requirements.txt "$req" | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  log "installing Python packages from $req into .venv"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$req"
  touch "$stamp"
fi

# --- generated gRPC code --------------------------------------------------------------------------
gen=build/gen
proto_stamp=$gen/.stamp-$(cat proto/imagesearch/v1/*.proto | sha256sum | cut -c1-16)
if [ ! -f "$proto_stamp" ]; then
  log "generating gRPC code into $gen"
  rm -rf "$gen" && mkdir -p "$gen"
  .venv/bin/python -m grpc_tools.protoc -Iproto --python_out="$gen" --pyi_out="$gen" --grpc_python_out="$gen" \
    proto/imagesearch/v1/*.proto
  touch "$proto_stamp"
fi
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%s\n%s\n' "$root" "$root/$gen" > "$site/imagesearch-project.pth"

# --- model export (torch is needed only here, in its own environment) ------------------------------
export_env() {
  if [ ! -f .cache/export-venv/.installed ]; then
    log "installing the model export environment (torch CPU) into .cache/export-venv"
    python3 -m venv .cache/export-venv
    .cache/export-venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-export.txt
    touch .cache/export-venv/.installed
  fi
  # The ImageNet label and WordNet lemma files ship in timm's wheel; its dependencies are not needed.
  if [ ! -f .cache/export-venv/.installed-labels ]; then
    .cache/export-venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-export-labels.txt
    touch .cache/export-venv/.installed-labels
  fi
}
models=(${IMAGESEARCH_MODELS:-efficientnet-lite0})
for model in "${models[@]}"; do
  if [ ! -f ".cache/models/$model.onnx" ] || [ ! -f ".cache/models/$model.json" ]; then
    export_env
    log "exporting $model to ONNX (and its classifier head)"
    .cache/export-venv/bin/python services/extractor/export.py --model "$model" --out .cache/models
  elif [ ! -f ".cache/models/$model-head.npz" ]; then
    # Only the head: a new ONNX file would change the model id of every album's vectors.
    export_env
    log "exporting $model's classifier head and ImageNet labels"
    .cache/export-venv/bin/python services/extractor/export.py --model "$model" --out .cache/models --head-only
  fi
done
# --- whitening (learned once, with the runtime environment, for the extractor's settings) ----------
# EXTRACTOR_* variables (e.g. EXTRACTOR_EXTRA_SCALES='[224]') select the pipeline it is learned for.
if ! .venv/bin/python -m services.extractor.fit_whitening --check 2>/dev/null; then
  if [ ! -d .cache/whiten-data/debs ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq  # apt-get download needs the package lists
  fi
  log "learning the PCA whitening (downloads ~165 MB of Debian picture packages once)"
  .venv/bin/python -m services.extractor.fit_whitening --work .cache/whiten-data
fi
# --- photos of people for the face tests and bench/faces.py (--dev only) -----------------------------
# Real photos of known people from the face_recognition 1.3.0 sdist's tests (MIT package; White House
# photos, public domain): three of one person, one of another. Only the pictures are kept.
if [ $dev -eq 1 ] && [ ! -f .cache/faces/people/.done ]; then
  log "fetching photos of people for the face tests (face_recognition 1.3.0 sdist, 3 MB)"
  mkdir -p .cache/faces/people && tmp=$(mktemp -d)
  .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
    face_recognition==1.3.0 -d "$tmp"
  tar -xzf "$tmp"/face_recognition-1.3.0.tar.gz -C "$tmp" face_recognition-1.3.0/tests/test_images
  cp "$tmp"/face_recognition-1.3.0/tests/test_images/{obama,obama2,obama3,biden}.jpg .cache/faces/people/
  rm -rf "$tmp" && touch .cache/faces/people/.done
fi
log "ready"
