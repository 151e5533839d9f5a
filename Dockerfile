# syntax=docker/dockerfile:1
# One image for every sdqueue role: `sdq api`, `sdq worker` (GPU), `sdq controller`, `sdq webhooks`.
#   docker build -t sdqueue .
#   docker run --gpus all -e SDQ_REDIS_URL=rediss://… -e SDQ_STORAGE_URL=s3://… -v /mnt/nvme:/models sdqueue worker
# PyTorch's CUDA wheels bring their own CUDA libraries (cuBLAS, cuDNN); the CUDA runtime base supplies the
# matching userspace and the NVIDIA Container Toolkit hooks (NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES).
# The base is pinned by its version tag in this ARG (checkov cannot see through the ARG in FROM).
#checkov:skip=CKV_DOCKER_7:FROM uses the CUDA_IMAGE build argument, whose default is a pinned version tag.
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Ubuntu's archive keeps only the current build of each package, so an exact `=version` pin breaks the build at the
# next security update; the CUDA base tag pins the distribution release instead.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3.12 -m venv /opt/sdqueue
ENV PATH=/opt/sdqueue/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY producer producer
COPY gpu_worker gpu_worker
COPY storage storage
# Installs this source tree (not a registry name); its dependency ranges are pinned in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install ".[worker,aws,azure,gcp]" \
 && python -m compileall -q /opt/sdqueue

FROM ${CUDA_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/sdqueue/bin:$PATH \
    SDQ_DATA_DIR=/data SDQ_MODEL_CACHE_DIR=/models HF_HOME=/models/hf SDQ_HOST=0.0.0.0
# Same reason as above for not pinning the Ubuntu packages.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sdq \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin sdq \
 && mkdir -p /data /models \
 && chown 10001:10001 /data /models
COPY --from=build /opt/sdqueue /opt/sdqueue
COPY --chmod=0755 infra_templates/docker/healthcheck.py /usr/local/bin/sdq-healthcheck
USER 10001:10001
WORKDIR /data
# The model cache belongs on local NVMe (`-v /mnt/nvme:/models`); /data holds local state (embedded Redis, keys).
VOLUME ["/models", "/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
  CMD ["/opt/sdqueue/bin/python", "/usr/local/bin/sdq-healthcheck"]
# tini forwards SIGTERM to sdq (graceful drain on spot notice or scale-in) and reaps child processes.
ENTRYPOINT ["/usr/bin/tini", "--", "sdq"]
CMD ["api"]
