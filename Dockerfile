# Sinal: one node (HTTP on 3000, WebSocket on 3001).
#
#   docker build -t sinal .
#   docker run --rm -p 3000:3000 -p 3001:3001 \
#       -e DATABASE_URL=postgresql://... -e REDIS_URL=redis://... -e JWT_SECRET=... sinal
#
# SINAL_ENV=production: without JWT_SECRET (at least 32 characters) `sinal serve` stops
# with exit code 2. Give DATABASE_URL too: the image has no embedded PostgreSQL (the
# `embedded` extra is not installed).
# SINAL_HOST=0.0.0.0: the servers bind every interface of the container (default 127.0.0.1).
# Migrations apply at start (and with `docker run ... sinal migrate`).
# docker-compose.yml runs two of these behind nginx.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SINAL_ENV=production \
    SINAL_HOST=0.0.0.0 \
    HTTP_PORT=3000 \
    WEBSOCKET_PORT=3001

# Unprivileged runtime user; numeric ids so that runAsNonRoot-style checks can verify it.
RUN groupadd --system --gid 10001 sinal \
    && useradd --system --uid 10001 --gid sinal --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin sinal

WORKDIR /app

# The build context is filtered by .dockerignore (no .venv, .git, .env, tests).
COPY . /app
RUN pip install . \
    && rm -rf build ./*.egg-info

USER 10001:10001

EXPOSE 3000 3001

# Liveness only: the process answers. python:3.11-slim has no curl, so Python asks.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('HTTP_PORT', '3000'), timeout=4)"]

# Trio turns SIGINT into an orderly unwind of every nursery. Plain SIGTERM would be
# ignored by a process running as PID 1 without its own handler.
STOPSIGNAL SIGINT

CMD ["sinal", "serve"]
