# syntax=docker/dockerfile:1
# clv-service image. Build: docker build -t clv-service .   Run: docker compose up (README, Operations)
#
# Stage 1 resolves and installs the locked dependencies (uv.lock, no dev group) into /srv/.venv;
# stage 2 is a fresh slim Python with that virtualenv, the code and nothing else: no uv, no pip
# caches, no compilers, running as an unprivileged user.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/srv/.venv
RUN pip install --no-cache-dir "uv==0.13.9"
WORKDIR /srv
# Dependencies first: this layer is rebuilt only when the lock changes, not on every code edit.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project --extra train
COPY app ./app
COPY migrations ./migrations
COPY alembic.ini ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra train \
    && python -m compileall -q app migrations

FROM ${PYTHON_IMAGE} AS runtime
# A fixed numeric uid/gid, so orchestrators can verify runAsNonRoot and volumes can be pre-owned.
RUN groupadd --system --gid 10001 clv \
    && useradd --system --uid 10001 --gid clv --home-dir /srv --no-create-home \
       --shell /usr/sbin/nologin clv \
    && mkdir -p /srv/models \
    && chown clv:clv /srv/models
WORKDIR /srv
# Code and virtualenv stay root-owned (read-only to the service); only models/ is writable, and a
# named volume mounted there starts out owned by clv.
COPY --from=build /srv/.venv /srv/.venv
COPY --from=build /srv/app /srv/app
COPY --from=build /srv/migrations /srv/migrations
COPY --from=build /srv/alembic.ini /srv/alembic.ini
COPY --chmod=0755 docker/entrypoint.sh /srv/docker/entrypoint.sh
ENV PATH="/srv/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CLV_HOST=0.0.0.0 \
    CLV_PORT=8000 \
    CLV_MODEL_DIR=/srv/models
USER 10001:10001
EXPOSE 8000
# Liveness only (/healthz): a database outage must not get the container killed; /readyz is for
# load balancers. Python is in the image anyway, curl is not.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CLV_PORT', '8000'), timeout=2).status != 200)"]
# The same script CI runs from a checkout: serve | migrate | train | score | import-transactions | any clv command.
ENTRYPOINT ["/srv/docker/entrypoint.sh"]
CMD ["serve"]
