# GPU worker image: the CUDA base brings its own CUDA build of torch; pyproject only asks torch>=2.3,
# so pip keeps it. Run one container (one Celery process, concurrency 1) per GPU.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY unlearning ./unlearning
COPY service ./service
# The SDK: the service verifies signed documents and signs webhooks with it.
COPY sdk ./sdk
COPY worker ./worker
COPY migrations ./migrations
COPY alembic.ini ./
RUN pip install "./sdk[verify]" ".[service,s3]"
RUN useradd --system --uid 10001 app && mkdir -p /data && chown app /data
USER app
ENV UNLEARN_DATA_DIR=/data UNLEARN_DEVICE=auto
HEALTHCHECK --interval=30s --timeout=10s --retries=3 \
  CMD celery -A worker.celery_app inspect ping -d "celery@$HOSTNAME" --timeout 5 || exit 1
CMD ["unlearn-service", "worker", "--concurrency", "1"]
