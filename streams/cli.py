"""`anpi`: the command line. Each subcommand is a thin shell over a runtime."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="anpi", description="anpi 安否確認: LINE safety check-ins for municipalities")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sim = commands.add_parser("simulate", help="run a scenario over virtual time; print one JSON effect per line")
    sim.add_argument("scenario", help="scenario file (.yaml, .yml or .json)")
    sim.add_argument("--runtime", choices=["embedded", "kafka"], default="embedded",
                     help="where the engine runs: embedded (this process) or kafka (real topics and a worker "
                          "process on the broker at ANPI_KAFKA; start it with `anpi services up`)")

    commands.add_parser("worker", help="run one Faust worker of the Kafka runtime (settings from ANPI_* variables)")

    bench = commands.add_parser("bench", help="measure the engine")
    bench_what = bench.add_subparsers(dest="what", required=True, metavar="WHAT")
    core = bench_what.add_parser("core", help="check cycles per second of the pure core, one process")
    core.add_argument("--members", type=int, default=100_000)
    core.add_argument("--days", type=int, default=30)
    core.add_argument("--answer-after", type=int, default=5, metavar="MINUTES",
                      help="each member taps OK this many minutes after each check")

    svc = commands.add_parser("services", help="start or stop the local Kafka broker and Redis server")
    svc_what = svc.add_subparsers(dest="what", required=True, metavar="ACTION")
    svc_up = svc_what.add_parser("up", help="start both (if not running) and wait until they answer")
    svc_up.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                        help="give up if they do not answer by then")
    svc_what.add_parser("down", help="stop both")

    kafka = bench_what.add_parser("kafka", help="events per second through the subject agent on the real broker")
    kafka.add_argument("--members", type=int, default=100_000)
    bench_what.add_parser("tick", help="cost of a tick with 1,000 subjects due, in tables of 10,000 and 1,000,000")
    recovery = bench_what.add_parser("recovery", help="worker start over a changelog of N members' state")
    recovery.add_argument("--members", type=int, default=1_000_000)

    args = parser.parse_args(argv)
    if args.command == "simulate":
        return _simulate(args)
    if args.command == "bench":
        from streams import bench as benches
        if args.what == "kafka":
            print(benches.kafka_bench(args.members))
        elif args.what == "tick":
            print(benches.tick_bench())
        elif args.what == "recovery":
            print(benches.recovery_bench(args.members))
        else:
            print(benches.core_bench(args.members, args.days, args.answer_after))
        return 0
    if args.command == "worker":
        from streams.kafka.worker import main as worker_main
        return worker_main()
    if args.command == "services":
        from streams import services
        return services.up(timeout=args.timeout) if args.what == "up" else services.down()
    return 2


def _simulate(args) -> int:
    from streams import scenario, simulator

    try:
        loaded = scenario.load(args.scenario)
    except scenario.ScenarioError as e:
        print(f"anpi simulate: {e}", file=sys.stderr)
        return 2
    if args.runtime == "kafka":
        effects = _simulate_on_kafka(loaded)
        if effects is None:
            return 1
    else:
        effects = simulator.run(loaded)
    out = sys.stdout
    for effect in effects:
        out.write(simulator.to_json(effect, loaded.zone))
        out.write("\n")
    out.flush()
    return 0


def _simulate_on_kafka(loaded):
    import asyncio
    import logging

    from aiokafka.errors import KafkaConnectionError

    from streams.kafka import simulate as kafka_simulate

    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # its retries are not the user's business
    try:
        return asyncio.run(kafka_simulate.run(loaded))
    except KafkaConnectionError:
        print("anpi simulate: cannot reach Kafka at ANPI_KAFKA (start it with `anpi services up`)", file=sys.stderr)
    except (TimeoutError, RuntimeError) as e:
        print(f"anpi simulate: {e}", file=sys.stderr)
    return None


if __name__ == "__main__":
    sys.exit(main())
