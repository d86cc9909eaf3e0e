# The streamq worker image. Dependencies are installed when the image is built, never at
# start-up; the worker runs in exec form, so SIGTERM from `docker stop` or
# `docker compose down` reaches python itself and it shuts down gracefully (running jobs
# get STREAMQ_SHUTDOWN_GRACE seconds, unstarted ones are handed back at once).
#
#   docker build -t streamq-worker .
#   docker run --rm -e REDIS_URL=redis://host:6379/0 -p 127.0.0.1:9108:9108 streamq-worker
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY lua ./lua
COPY streamq ./streamq
# a wheel of this source tree (Lua scripts inside) plus uvloop; then an unprivileged user
RUN pip install ".[fast]" \
    && rm -rf /app \
    && useradd --system --create-home --shell /usr/sbin/nologin streamq
# run the installed wheel, not a source tree in the working directory
WORKDIR /home/streamq
USER streamq

# /metrics and /healthz
EXPOSE 9108
ENTRYPOINT ["python", "-m", "streamq.worker"]
CMD ["--log-format", "json", "--metrics-host", "0.0.0.0", "--metrics-port", "9108"]
