# erastream, CPU image: every stage, the CLI and the topic admin. `erastream` is the entrypoint:
#   docker run --rm erastream:latest stage tsfresh --workers 2
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # BLAS threads above 1 inside several worker processes made runs 3-9x slower (DESIGN.md):
    # one thread per worker process; scale with --workers / N_JOBS instead.
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    NUMEXPR_NUM_THREADS=1 \
    DATA_DIR=/data

WORKDIR /app

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes.
# (Empty package directories let setuptools resolve the project without its sources.)
COPY pyproject.toml README.md ./
RUN mkdir -p streams stages schemas infra \
    && pip install . \
    && pip uninstall -y erastream

# Then the code itself, without touching the dependencies again.
COPY streams ./streams
COPY stages ./stages
COPY schemas ./schemas
COPY infra ./infra
# The feature kernels compiled into numba's cache (NUMBA_CACHE_DIR, handed to the runtime user
# below) from the installed package (run from /, not /app's copy): no compile pause on the
# first era.
ENV NUMBA_CACHE_DIR=/var/cache/numba
RUN pip install --no-deps . \
    && erastream --help >/dev/null \
    && cd / && python -m stages.feature_engine.warm

# An unprivileged user owning the state directory (follow state, embedded chDB when used).
RUN useradd --create-home --uid 10001 erastream \
    && mkdir -p /data \
    && chown erastream:erastream /data \
    && chown -R erastream:erastream /var/cache/numba
USER erastream

# Prometheus metrics, when METRICS_PORT is set (compose sets 9108).
EXPOSE 9108

ENTRYPOINT ["erastream"]
CMD ["--help"]
