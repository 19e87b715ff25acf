"""`anpi worker`: one Faust worker of the Kafka runtime, configured from the environment."""
from __future__ import annotations

import sys

from streams import startup
from streams.kafka.settings import Settings
from streams.process import tune_gc


def main(loglevel: str = "warning") -> int:
    import faust  # imported here: `anpi simulate` and friends must not pay for Faust's start-up

    from streams.kafka.app import create_app

    settings = Settings.from_env()
    startup.port(settings.web_port, "ANPI_WEB_PORT", settings.web_host)  # /metrics and /healthz
    app = create_app(settings)
    tune_gc()
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()  # runs until SIGTERM / SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(startup.guarded("worker", lambda: main(*(sys.argv[1:2]))))
