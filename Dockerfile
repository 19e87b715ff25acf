# anpi: one image for the engine's processes; by default a Faust worker of the Kafka runtime
# (`anpi worker`, settings from the ANPI_* variables: streams/kafka/settings.py).
#
#   docker build -t anpi .
#   docker run --rm anpi anpi simulate /src/examples/danchi.yaml     # the engine alone, no services
#
# Only what the package needs is copied: a plain `COPY . .` would also bring in .venv/, var/
# (the native Kafka's jars) and the Faust data directories of local runs.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas/ schemas/
COPY agents/ agents/
COPY streams/ streams/
COPY linesim/ linesim/
COPY examples/ examples/
RUN pip install --no-cache-dir . \
 && rm -rf build *.egg-info

# Non-root. Faust keeps a small data directory under the working directory, so that is a
# directory this user owns. The subjects' states live in Kafka (the changelog topic), not here.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/anpi anpi \
 && mkdir -p /data \
 && chown anpi:anpi /data
USER anpi
WORKDIR /data
ENV ANPI_VAR=/data/var

# the worker's web server: /metrics for Prometheus (ANPI_WEB_PORT)
EXPOSE 6066

CMD ["anpi", "worker"]
