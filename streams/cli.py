"""`anpi`: the command line. Each subcommand is a thin shell over a runtime."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="anpi", description="anpi 安否確認: LINE safety check-ins for municipalities")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sim = commands.add_parser("simulate", help="run a scenario over virtual time; print one JSON effect per line")
    sim.add_argument("scenario", help="scenario file (.yaml, .yml or .json)")
    sim.add_argument("--runtime", choices=["embedded"], default="embedded",
                     help="where the engine runs (embedded: in this process)")

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

    args = parser.parse_args(argv)
    if args.command == "simulate":
        return _simulate(args)
    if args.command == "bench":
        from streams.bench import core_bench
        print(core_bench(args.members, args.days, args.answer_after))
        return 0
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
    out = sys.stdout
    for effect in simulator.run(loaded):
        out.write(simulator.to_json(effect, loaded.zone))
        out.write("\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
