# syntax=docker/dockerfile:1
# clv-service images (docs/containers.md). Two targets from one file:
#   api      (default) serve + migrate + keys: docker build -t clv-service .
#   trainer  train, score, imports:            docker build --target trainer -t clv-service-trainer .
#
# The build stages resolve the locked dependencies (uv.lock, no dev group) into /srv/.venv; the final
# stages are a fresh Python with that virtualenv, the code and the shipped model and nothing else:
# no uv, no pip caches, no compilers, running as an unprivileged user.
#
# PYTHON_IMAGE builds (needs `python3 -m venv`), RUNTIME_IMAGE runs (needs python3 only). Hosts
# without a registry build both from Debian packages: .ci/container-base.sh, docs/containers.md.
# Behind a TLS-intercepting proxy pass its CA as a build secret (never stored in any layer):
#   --secret id=extra-ca,src=/path/to/proxy-ca.pem
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG RUNTIME_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/srv/.venv
# Build helpers: trust an extra CA for one RUN (the `extra-ca` secret); strip tests from the venv.
COPY --chmod=0755 docker/with-extra-ca.sh docker/strip-venv.sh /usr/local/bin/
# uv in a venv of its own: works on a Debian python3 (PEP 668) as on the official images.
RUN --mount=type=secret,id=extra-ca \
    python3 -m venv /opt/uv \
    && with-extra-ca.sh /opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check "uv==0.13.9"
WORKDIR /srv
COPY pyproject.toml uv.lock README.md ./
# The project itself is an editable install (a .pth pointing at /srv); hatchling only needs the
# package to exist, so the venv layers do not depend on the code and survive every code edit.
RUN mkdir app && touch app/__init__.py

# Everything the API process and `migrate`/`keys` import. Left out, because only training (ONNX
# export through skl2onnx/scikit-learn) and batch scoring (Parquet) import them:
# pyarrow, scikit-learn, skl2onnx and scikit-learn's own dependencies.
FROM build AS deps-api
RUN --mount=type=cache,target=/root/.cache/uv --mount=type=secret,id=extra-ca \
    with-extra-ca.sh /opt/uv/bin/uv sync --frozen --no-dev \
        --no-install-package pyarrow \
        --no-install-package scikit-learn \
        --no-install-package skl2onnx \
        --no-install-package joblib \
        --no-install-package threadpoolctl \
        --no-install-package narwhals \
        --no-install-package cloudpickle \
    && strip-venv.sh

# The whole locked runtime set plus the `train` and `dask` extras (no dev group): train, score,
# import-transactions, generate-demo, and `--dask` (the same image runs as a Dask worker).
FROM build AS deps-trainer
RUN --mount=type=cache,target=/root/.cache/uv --mount=type=secret,id=extra-ca \
    with-extra-ca.sh /opt/uv/bin/uv sync --frozen --no-dev --extra train --extra dask \
    && strip-venv.sh

# The code, byte-compiled once here (the runtime's code is read-only).
FROM build AS source
COPY app ./app
COPY migrations ./migrations
COPY alembic.ini ./
RUN python3 -m compileall -q app migrations

# Shared by both targets: the user, the layout, the settings, the entrypoint.
FROM ${RUNTIME_IMAGE} AS runtime
# A fixed numeric uid/gid, so orchestrators can verify runAsNonRoot and volumes can be pre-owned.
RUN groupadd --system --gid 10001 clv \
    && useradd --system --uid 10001 --gid clv --home-dir /srv --no-create-home \
       --shell /usr/sbin/nologin clv \
    && mkdir -p /srv/models \
    && chown clv:clv /srv/models
WORKDIR /srv
ENV PATH="/srv/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CLV_HOST=0.0.0.0 \
    CLV_PORT=8000 \
    CLV_MODEL_DIR=/srv/models \
    CLV_DEFAULT_MODEL_DIR=/srv/default-models \
    CLV_WAIT_FOR_DATABASE_SECONDS=60
ENTRYPOINT ["/srv/docker/entrypoint.sh"]

# In both targets, the big virtualenv layer first: it is rebuilt only when uv.lock changes, not when
# the model, the entrypoint or the code do. The model shipped with the code is copied into an empty
# CLV_MODEL_DIR (a fresh volume) on start, so a new deployment serves at once. Code, venv and this
# copy stay root-owned (read-only to the service); only models/ is writable, and a named volume
# mounted there starts out owned by clv.
FROM runtime AS trainer
COPY --from=deps-trainer /srv/.venv /srv/.venv
COPY models /srv/default-models
COPY --chmod=0755 docker/entrypoint.sh docker/wait_for_database.py /srv/docker/
COPY --from=source /srv/app /srv/app
COPY --from=source /srv/migrations /srv/migrations
COPY --from=source /srv/alembic.ini /srv/alembic.ini
USER 10001:10001
CMD ["train"]

FROM runtime AS api
COPY --from=deps-api /srv/.venv /srv/.venv
COPY models /srv/default-models
COPY --chmod=0755 docker/entrypoint.sh docker/wait_for_database.py /srv/docker/
COPY --from=source /srv/app /srv/app
COPY --from=source /srv/migrations /srv/migrations
COPY --from=source /srv/alembic.ini /srv/alembic.ini
USER 10001:10001
EXPOSE 8000
# Liveness only (/healthz): a database outage must not get the container killed; /readyz is for
# load balancers. Python is in the image anyway, curl is not.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CLV_PORT', '8000'), timeout=2).status != 200)"]
# The same script CI runs from a checkout: serve | migrate | train | score | import-transactions | any clv command.
CMD ["serve"]
