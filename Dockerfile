# One image for every Atelier process: `atelier serve`, `atelier worker`, `atelier db upgrade`.
# torch==2.14.1 from PyPI is the CUDA build on x86_64, so the same image runs GPU workers.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ATELIER_DATA_DIR=/data \
    ATELIER_HOST=0.0.0.0 \
    ATELIER_AUTH=on \
    TORCH_HOME=/models/torch

RUN groupadd --system atelier && useradd --system --gid atelier --home /app atelier
WORKDIR /app

# Dependencies first, so a code change does not reinstall torch.
COPY pyproject.toml README.md ./
RUN mkdir -p core web worker atelier && touch core/__init__.py web/__init__.py worker/__init__.py atelier/__init__.py \
    && pip install . && pip uninstall -y atelier

COPY core ./core
COPY web ./web
COPY worker ./worker
COPY atelier ./atelier
COPY migrations ./migrations
RUN pip install --no-deps -e . \
    && mkdir -p /data /models/torch && chown -R atelier:atelier /data /models

USER atelier
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)" || exit 1
CMD ["atelier", "serve"]
