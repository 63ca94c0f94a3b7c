# The voice AI agent (voiceai-ari). Build context = the repository root (docker-compose.yml: build: .).
# debian:bookworm-slim + the distribution's Python 3.11 in a venv (bookworm's system pip refuses installs, PEP 668).
FROM debian:bookworm-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv

WORKDIR /build
COPY pyproject.toml README.md ./
COPY voiceai_ari/ ./voiceai_ari/
RUN pip install . \
 && cd / && rm -rf /build

RUN useradd --system --create-home --home-dir /home/voiceai --shell /usr/sbin/nologin voiceai
USER voiceai
WORKDIR /home/voiceai

# RTP from Asterisk's externalMedia channels arrives here (VOICEAI_RTP_PORTS)
EXPOSE 40000-40199/udp
CMD ["voiceai-ari", "run"]
