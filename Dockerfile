# syntax=docker/dockerfile:1
# One image for every sdqueue role: `sdq api`, `sdq worker` (GPU) and `sdq controller`.
#   docker build -t sdqueue .
#   docker run --gpus all -e SDQ_REDIS_URL=redis://… -e SDQ_STORAGE_URL=s3://… -v /mnt/nvme:/models sdqueue worker
ARG CUDA_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

FROM ${CUDA_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/sdqueue
ENV PATH=/opt/sdqueue/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY producer producer
COPY gpu_worker gpu_worker
COPY storage storage
RUN pip install ".[worker,aws,azure,gcp]"

FROM ${CUDA_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PATH=/opt/sdqueue/bin:$PATH \
    SDQ_DATA_DIR=/data SDQ_MODEL_CACHE_DIR=/models SDQ_HOST=0.0.0.0 HF_HOME=/models/hf
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home sdq \
 && mkdir -p /data /models && chown sdq /data /models
COPY --from=build /opt/sdqueue /opt/sdqueue
USER sdq
VOLUME ["/models", "/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD python3.11 -c "import sys,urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)" || exit 1
ENTRYPOINT ["sdq"]
CMD ["api"]
