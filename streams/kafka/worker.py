"""`anpi worker`: one Faust worker of the Kafka runtime, configured from the environment."""
from __future__ import annotations

import sys

from streams.kafka.settings import Settings
from streams.runtime import tune_gc


def main(loglevel: str = "warning") -> int:
    import faust  # imported here: `anpi simulate` and friends must not pay for Faust's start-up

    from streams.kafka.app import create_app

    app = create_app(Settings.from_env())
    tune_gc()
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()  # runs until SIGTERM / SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main(*(sys.argv[1:2])))
