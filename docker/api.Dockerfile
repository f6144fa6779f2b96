# API image: CPU-only torch (the API validates checkpoints and data sets, it does not train).
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.5.1"
COPY pyproject.toml README.md ./
COPY service ./service
# The SDK: the service verifies signed documents and signs webhooks with it.
COPY sdk ./sdk
COPY unlearning ./unlearning
COPY migrations ./migrations
COPY alembic.ini ./
RUN pip install "./sdk[verify]" ".[service,s3]"
RUN useradd --system --uid 10001 app && mkdir -p /data && chown app /data
USER app
ENV UNLEARN_DATA_DIR=/data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz').status==200 else 1)"
CMD ["unlearn-service", "api", "--host", "0.0.0.0", "--port", "8000"]
