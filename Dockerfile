# The bot itself (not the UAT image, which is container/Dockerfile).
# Build: docker build -t uat-bot .   Run: docker run --env-file .env -p 3000:3000 uat-bot
FROM python:3.11-slim-bookworm

# git resolves and exports refs for /uat staging; the docker SDK talks to a daemon given by
# DOCKER_HOST (image builds need one; everything else works without).
RUN apt-get update \
    && apt-get install -y --no-install-recommends git=1:2.39.* \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY commands ./commands
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 1001 uat
USER 1001
WORKDIR /home/uat
ENV UAT_DB=/home/uat/uat-bot.db
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/healthz', timeout=2)"]
ENTRYPOINT ["uat-bot"]
CMD ["serve"]
