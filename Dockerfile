# Tandem server image: slim Python pinned by digest, dependencies installed from a
# hash-locked file, non-root, data in a volume, the service key in a separate mount,
# health-checked. See docs/container.md.
#
# The base image is pinned by digest; the tag beside it is for people, the digest is
# what is pulled. Moving to a newer base is a reviewed change of that digest.
FROM python:3.11.10-slim-bookworm@sha256:840e180ebcc6e5c8efab209c43f5e40fd2af98cb49db5c7103c90539c56bb30e

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TANDEM_DATA_DIR=/data \
    TANDEM_SERVICE_KEY_FILE=/run/tandem/service.key
WORKDIR /app

# Every dependency, and the build back-end, comes from a lock with hashes: pip refuses
# anything unpinned or whose bytes differ. Tandem itself is then built offline.
COPY requirements/build.lock requirements/server.lock ./requirements/
RUN pip install --require-hashes --no-deps -r requirements/build.lock \
    && pip install --require-hashes --no-deps -r requirements/server.lock
COPY pyproject.toml README.md ./
COPY src ./src
COPY ceremonies ./ceremonies
COPY docker/entrypoint.sh /usr/local/bin/tandem-entrypoint
RUN pip install --no-deps --no-build-isolation --no-index . \
    && chmod 0755 /usr/local/bin/tandem-entrypoint \
    && useradd --system --uid 10001 --home-dir /data tandem \
    && mkdir -p /data /run/tandem \
    && chown tandem /data /run/tandem \
    && chmod 0700 /data /run/tandem

USER tandem
# The database (SQLite) and the public copy of what `tandem init` printed. The service
# key is NOT here: mount /run/tandem separately (or point TANDEM_SERVICE_KEY_FILE at a
# secret), so a backup or copy of the data volume never carries the key with it.
VOLUME ["/data"]
EXPOSE 8600

# Healthy only when /v1/health answers 200: a sealed service (503) is unhealthy. The
# start period covers the start-up audit-chain check, before the port opens.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('TANDEM_PORT', '8600'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/v1/health', timeout=4).status == 200 else 1)"]

# `docker run IMAGE` serves; `docker run IMAGE serve --port 9000` passes arguments on;
# `docker run IMAGE audit verify --full` runs any other tandem command; see the script.
ENTRYPOINT ["tandem-entrypoint"]
CMD ["serve"]
