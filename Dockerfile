# Tandem server image: slim Python, non-root, data in a volume, health-checked.
FROM python:3.12-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    TANDEM_DATA_DIR=/data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY ceremonies ./ceremonies
RUN pip install . && useradd --system --uid 10001 --home-dir /data tandem \
    && mkdir -p /data && chown tandem /data
USER tandem
VOLUME ["/data"]
EXPOSE 8600
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8600/v1/health', timeout=4).status == 200 else 1)"
# `tandem init` is idempotent: creates the service key and schema on first start only.
ENTRYPOINT ["sh", "-c", "tandem init --data-dir /data >/dev/null && exec tandem serve --host 0.0.0.0 --port 8600"]
