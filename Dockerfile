# syntax=docker/dockerfile:1
# Build: docker build -t clv-service .      Run: docker compose up (see README)
FROM python:3.11-slim AS build
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
RUN pip install --no-cache-dir "uv==0.13.9"
WORKDIR /srv
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY app ./app
COPY migrations ./migrations
COPY alembic.ini ./
RUN uv sync --frozen --no-dev

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home /srv clv
WORKDIR /srv
COPY --from=build --chown=clv:clv /srv /srv
COPY --chown=clv:clv models ./models
ENV PATH="/srv/.venv/bin:$PATH" PYTHONUNBUFFERED=1
USER clv
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"
# The same `clv` command CI runs on the host: serve, migrate, import-transactions, generate-demo...
ENTRYPOINT ["clv"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
