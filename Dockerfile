# One image for every flexmarket process; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY flexmarket flexmarket
COPY beckn beckn
COPY schemas schemas
COPY registry registry
COPY gateway gateway
COPY bap bap
COPY bpp bpp
COPY ledger ledger
COPY migrations migrations
COPY data data
RUN pip install --no-cache-dir -e .
ENTRYPOINT []
