# The bot itself (not the UAT image, which is container/Dockerfile).
# Build: docker build -t uat-bot .   Run: docker run --env-file .env -p 3000:3000 uat-bot
# BASE: any Debian bookworm with Python 3.11 and venv (`make images` passes one built from
# Debian's own packages, for machines that cannot reach Docker Hub).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

# git resolves and exports refs for /uat staging; the docker SDK talks to a daemon given by
# DOCKER_HOST (image builds need one; everything else works without).
RUN apt-get update \
    && apt-get install -y --no-install-recommends git=1:2.39.* \
    && rm -rf /var/lib/apt/lists/*

# The dependencies come from requirements.lock (exact versions with their hashes; `make lock`
# regenerates it from pyproject.toml), then the bot itself without resolving anything again. A
# venv, so that a base whose Python is Debian's (externally managed) takes them as well.
WORKDIR /app
ENV PATH=/opt/uat-bot/bin:${PATH}
COPY requirements.lock ./
RUN python3 -m venv /opt/uat-bot \
    && pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY commands ./commands
RUN pip install --no-cache-dir --no-deps . \
    && useradd --create-home --uid 1001 uat
USER 1001
WORKDIR /home/uat
ENV UAT_DB=/home/uat/uat-bot.db
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/livez', timeout=2)"]
ENTRYPOINT ["uat-bot"]
CMD ["serve"]
