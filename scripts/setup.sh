#!/usr/bin/env bash
# Installs everything the system needs on a fresh Debian machine, idempotently:
#   system packages (redis-server), the virtual environment (.venv), generated gRPC code (build/gen),
#   the ONNX model export (.cache/models, made once in a separate torch environment), its int8
#   quantisation (.cache/models/*-int8.*, calibrated on the whitening pictures, made once), and the PCA
#   whitening of each network learned from Debian picture packages (.cache/models/*-whiten512.*, made once).
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
  local stamp=.cache/export-venv/.installed-$(sha256sum < requirements-export.txt | cut -c1-16)
  if [ ! -f "$stamp" ]; then
    log "installing the model export environment (torch CPU, onnx, onnxruntime) into .cache/export-venv"
    [ -x .cache/export-venv/bin/python ] || python3 -m venv .cache/export-venv
    .cache/export-venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-export.txt
    touch "$stamp"
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
# The pictures the whitening is learned from and the int8 network calibrated on (never an evaluation set).
picture_lists() {
  if [ ! -d .cache/whiten-data/debs ]; then
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq  # apt-get download needs the package lists
    log "downloading ~165 MB of Debian picture packages once (whitening and int8 calibration)"
  fi
}
# --- int8 network (quantised once; the extractor's CPU default, EXTRACTOR_PRECISION) ---------------
for model in "${models[@]}"; do
  if [ ! -f ".cache/models/$model-int8.onnx" ] || [ ! -f ".cache/models/$model-int8.json" ]; then
    export_env
    picture_lists
    log "quantising $model to int8 (calibrated on 100 whitening pictures)"
    .venv/bin/python -m services.extractor.calibration --work .cache/whiten-data \
      --out .cache/whiten-data/calibration.npz
    .cache/export-venv/bin/python services/extractor/quantize.py --model "$model" --dir .cache/models \
      --calibration .cache/whiten-data/calibration.npz
  fi
done
# --- whitening (learned once per network, with the runtime environment, for the extractor's settings) --
# EXTRACTOR_* variables (e.g. EXTRACTOR_EXTRA_SCALES='[224]') select the pipeline it is learned for;
# each precision's network has its own (fp32 runs on a GPU, int8 on the CPU by default).
for precision in fp32 int8; do
  if ! EXTRACTOR_PRECISION=$precision .venv/bin/python -m services.extractor.fit_whitening --check 2>/dev/null; then
    picture_lists
    log "learning the PCA whitening of the $precision network"
    EXTRACTOR_PRECISION=$precision .venv/bin/python -m services.extractor.fit_whitening --work .cache/whiten-data
  fi
done
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
