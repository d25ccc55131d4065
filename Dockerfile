# The training job as a GPU image: `make docker-build`, then `make docker-run API=symbolic`.
# Based on the official TensorFlow GPU image of the pinned version (CUDA and cuDNN included); the
# project installs from requirements/runtime.lock, the same lock `make install`/`make test` use, so
# pip keeps the base image's tensorflow==2.21.0 and adds only what the lock pins on top.
# Build context: only requirements/runtime.lock and job/ (see .dockerignore); no credentials.
# No `# syntax=` line on purpose: it makes BuildKit fetch its front end from Docker Hub, which fails
# offline (air-gapped clusters, our CI); the front end built into Docker >= 20.10 handles RUN --mount.
# Pin the base by digest for a reproducible build: --build-arg BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu@sha256:...
ARG BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu
# checkov:skip=CKV_DOCKER_7:The tag is pinned in the BASE_IMAGE default above; checkov does not expand build ARGs.
FROM ${BASE_IMAGE}

# Unbuffered, so a crash still leaves its logs; no .pyc files on a read-only root filesystem.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Graphviz's `dot` draws the architecture diagram (plots/model.png); without it the run only warns.
# The distribution's graphviz is taken as is: the base image (pinned above) fixes the Ubuntu release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends graphviz \
    && rm -rf /var/lib/apt/lists/*

# A non-root user, and /scratch: the only writable place (an emptyDir in the pod, a tmpfs in docker-run).
RUN groupadd --gid 10001 appuser \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /scratch --shell /usr/sbin/nologin appuser \
    && mkdir -p /scratch && chmod 1777 /scratch
ENV HOME=/scratch \
    KERAS_HOME=/scratch/.keras \
    MPLCONFIGDIR=/scratch/.matplotlib \
    TMPDIR=/scratch

# Dependencies before code, so editing job/ does not reinstall them. The venv sees the base image's
# packages (--system-site-packages), so the lock's tensorflow==2.21.0 is already satisfied; it borrows
# the base image's pip (--without-pip), so it does not depend on ensurepip/python3-venv being installed.
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,source=requirements/runtime.lock,target=/tmp/runtime.lock \
    --mount=type=bind,source=image/check_base.py,target=/tmp/check_base.py \
    python3 -m venv --system-site-packages --without-pip "${VIRTUAL_ENV}" \
    && python -m pip install --requirement /tmp/runtime.lock \
    && python -m pip check \
    && python /tmp/check_base.py /tmp/runtime.lock

# The code itself is importable from /app (no build step, so no setuptools needed in the image). Compiled
# here: a read-only root filesystem (and PYTHONDONTWRITEBYTECODE) would otherwise compile it at every start.
WORKDIR /app
ENV PYTHONPATH=/app
COPY job ./job
RUN python -m compileall -q job && python -m job --help > /dev/null

# Provenance, last so a new commit rebuilds no layer above: OCI labels for registries and scanners,
# and the same values in the environment, where `python -m job --version` and config.json read them.
ARG VERSION=unknown
ARG GIT_COMMIT=unknown
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="cifar10-job" \
      org.opencontainers.image.description="The Keras CIFAR-10 chapter as a GPU training job" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.source="${SOURCE_URL}"
ENV JOB_VERSION="${VERSION}" \
    JOB_GIT_COMMIT="${GIT_COMMIT}"

# Numeric, so the kubelet can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
# A batch job reports through its exit code (job/errors.py), not a health endpoint.
HEALTHCHECK NONE
ENTRYPOINT ["python", "-m", "job"]
CMD ["train", "--help"]
