# The recstream image: every command of the `recstream` CLI (produce, consume, demo, ...).
#   docker build -t recstream .
#   docker run --rm recstream demo
# torch comes from the CPU-only wheel index by default (about 2 GB smaller than the PyPI
# wheel with CUDA); build with --build-arg TORCH_INDEX_URL=https://pypi.org/simple for
# the PyPI one.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "$TORCH_INDEX_URL" "torch>=2.4"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamer ./streamer
COPY consumers ./consumers
RUN pip install . && rm -rf /src

RUN useradd --create-home --uid 10001 recstream \
    && mkdir -p /var/lib/recstream && chown recstream /var/lib/recstream
# `consume` checkpoints under here by default (one directory per group and prefix):
# mount a volume on it to keep the model across containers.
ENV RECSTREAM_STATE_DIR=/var/lib/recstream
USER recstream
WORKDIR /home/recstream

# 9400: a learner's /metrics; 9401: the producer's.
EXPOSE 9400 9401
ENTRYPOINT ["recstream"]
CMD ["--help"]
