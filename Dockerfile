# syntax=docker/dockerfile:1
# trackcheck's service image: `trackcheck serve` by default, `trackcheck worker` with the command `worker`.
# Build: docker build -t trackcheck .   Run: see docs/deploy.md ("Containers") and compose.yaml.
# Nothing secret is baked in: the API token, the secret key and the state database's password arrive at run
# time, through TRACKCHECK_* variables or files mounted as secrets (TRACKCHECK_DB_PASSWORD_FILE, --config).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# Stage 1: wheels of trackcheck and of every dependency, so that the final stage needs no compiler and no
# source tree, only these wheels.
FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=all
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels ".[${EXTRAS}]"

# Stage 2: a virtualenv holding those wheels, run by an unprivileged user.
FROM ${PYTHON_IMAGE}
ARG EXTRAS=all
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    TRACKCHECK_HOST=0.0.0.0 \
    TRACKCHECK_PORT=8000
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels "trackcheck[${EXTRAS}]" \
    && groupadd --system --gid 10001 trackcheck \
    && useradd --system --uid 10001 --gid trackcheck --home-dir /var/lib/trackcheck --create-home \
        --shell /usr/sbin/nologin trackcheck
# the working directory holds the default SQLite state database (./trackcheck.db) and is read for a
# ./trackcheck.toml; mount a volume here to keep a SQLite state across containers
WORKDIR /var/lib/trackcheck
USER 10001:10001
EXPOSE 8000
# /healthz answers 503 with the reason when the state database or the pollers are down: urlopen raises on
# it, and the check fails (the slim image has no curl)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TRACKCHECK_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["trackcheck"]
CMD ["serve"]
