# syntax=docker/dockerfile:1
# Portero in a container: the one-file zipapp (zipapp/build.sh) on python:3.11-slim, with Node.js so that
# [[mcp]] servers started with `npx` work. See compose.yaml and the README's "Shipping" section.
#
# The config is mounted at /etc/portero/portero.toml. Inside the container the gateway must listen on
# 0.0.0.0 to be reachable through the published port, and portero/config/validate.py refuses
# auth = "none" on any non-loopback host, so the [server] section needs:
#   host = "0.0.0.0"
#   port = 8443
#   auth = "bearer"
#   bearer_token = "${PORTERO_BEARER_TOKEN}"   # from the env file, at least 16 characters
#   data_dir = "/var/lib/portero"
# Plain HTTP off loopback is accepted with a warning (the token would cross the network in clear text):
# publish the port on 127.0.0.1 only (as compose.yaml does), or set tls_cert/tls_key (mounted files),
# or put a reverse proxy that terminates TLS in front.

FROM python:3.11-slim AS builder
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY portero ./portero
COPY zipapp ./zipapp
# Built in the same image family as the runtime, so the compiled wheels (orjson...) match it.
RUN bash zipapp/build.sh /out/portero.pyz

FROM python:3.11-slim
# Debian's nodejs/npm are not pinned: they follow the base image's release and its security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/portero --shell /usr/sbin/nologin portero \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/portero /var/lib/portero/workspace \
    && install -d -m 0755 /etc/portero /opt/portero
COPY --from=builder /out/portero.pyz /opt/portero/portero.pyz
# shiv unpacks the dependencies on first start; keep them in the image's user-writable home.
ENV SHIV_ROOT=/home/portero/.shiv \
    PYTHONUNBUFFERED=1 \
    PORTERO_WORKSPACE=/var/lib/portero/workspace
# Numeric, so that runtimes enforcing runAsNonRoot can check it.
USER 10001:10001
WORKDIR /var/lib/portero
# Unpack once at build time so the first start is fast and a read-only root filesystem still works.
RUN python3 /opt/portero/portero.pyz --version
VOLUME ["/var/lib/portero"]
EXPOSE 8443
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8443/health', timeout=4).status != 200)"]
ENTRYPOINT ["python3", "/opt/portero/portero.pyz"]
CMD ["serve", "--config", "/etc/portero/portero.toml"]
