"""`anpi`: the command line. Each subcommand is a thin shell over a runtime."""
from __future__ import annotations

import argparse
import os
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

    commands.add_parser("sender", help="run the LINE sender of the Kafka runtime (settings and secrets from ANPI_*)")
    ing = commands.add_parser("ingress", help="serve the LINE webhook of the Kafka runtime (settings and secrets "
                                             "from ANPI_*), or with --db of anpi serve's SQLite file")
    ing.add_argument("--host", default="127.0.0.1")
    ing.add_argument("--port", type=int, default=8080)
    ing.add_argument("--processes", type=int, default=None,
                     help="servers on the one port (SO_REUSEPORT; default ANPI_INGRESS_PROCESSES or 1)")
    ing.add_argument("--db", default=None,
                     help="write into this SQLite file's inbox, for `anpi serve --db` on the same file to apply "
                          "(default: the Kafka runtime's inbound topic)")

    serve = commands.add_parser("serve", help="every tenant's webhook, engine and sender in this process (SQLite)")
    serve.add_argument("--db", default="var/anpi.db", help="the SQLite file (default var/anpi.db)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--roster", help="register the members and groups of this scenario file at start")

    demo = commands.add_parser("demo", help="the whole service with simulated LINE and residents, time sped up")
    demo.add_argument("--residents", type=int, default=300, help="how many simulated residents (default 300)")
    demo.add_argument("--days", type=float, default=3, help="virtual days to run with --exit (default 3)")
    demo.add_argument("--speed", type=float, default=5000, help="how many times faster than real time (default 5000)")
    demo.add_argument("--seed", type=int, default=1, help="the residents' behaviour (default 1)")
    demo.add_argument("--tenants", type=int, default=1,
                      help="municipalities run at once, each with --residents residents (default 1)")
    demo.add_argument("--runtime", choices=["embedded", "kafka"], default="embedded",
                      help="embedded: one process on SQLite (default); kafka: the broker, Redis and the Kafka "
                           "runtime's processes (started if not running)")
    demo.add_argument("--exit", action="store_true",
                      help="stop after --days and print one JSON summary line (else run until Ctrl-C)")

    admin = commands.add_parser("admin", help="manage the admin screen's staff accounts")
    admin_what = admin.add_subparsers(dest="what", required=True, metavar="ACTION")
    create_user = admin_what.add_parser("create-user", help="add a staff account (password from ANPI_ADMIN_PASSWORD "
                                                            "or stdin, never from the command line)")
    create_user.add_argument("--db", default="var/anpi.db", help="the SQLite file of `anpi serve` (default var/anpi.db)")
    create_user.add_argument("--tenant", required=True)
    create_user.add_argument("--login", required=True)
    create_user.add_argument("--role", choices=["admin", "operator"], default="admin")
    create_user.add_argument("--redis", nargs="?", const=os.environ.get("ANPI_REDIS", "redis://127.0.0.1:6379/0"),
                             metavar="URL", help="create it in Redis (the Kafka runtime's admin screen): at URL, "
                                                 "else ANPI_REDIS")
    unlock = admin_what.add_parser("unlock", help="let a staff account log in again from every address (when "
                                                  "every administrator is locked out)")
    unlock.add_argument("--db", default="var/anpi.db", help="the SQLite file of `anpi serve` (default var/anpi.db)")
    unlock.add_argument("--tenant", required=True)
    unlock.add_argument("--login", required=True)
    unlock.add_argument("--redis", nargs="?", const=os.environ.get("ANPI_REDIS", "redis://127.0.0.1:6379/0"),
                        metavar="URL", help="the account is in Redis (the Kafka runtime's admin screen): at URL, "
                                            "else ANPI_REDIS")
    admin_serve = admin_what.add_parser("serve", help="the admin screen of the Kafka runtime (/admin; settings from "
                                                      "ANPI_KAFKA, ANPI_REDIS, ANPI_TOPIC_PREFIX, ANPI_TIMEZONE)")
    admin_serve.add_argument("--host", default="127.0.0.1")
    admin_serve.add_argument("--port", type=int, default=8090)

    tenant = commands.add_parser("tenant", help="the municipalities this deployment serves: add one, list them")
    tenant_what = tenant.add_subparsers(dest="what", required=True, metavar="ACTION")
    tenant_add = tenant_what.add_parser("add", help="add a tenant (its LINE channel's secret and token from "
                                                    "ANPI_CHANNEL_SECRET / ANPI_CHANNEL_ACCESS_TOKEN or stdin, "
                                                    "never from the command line); served without a restart")
    tenant_add.add_argument("id", help="URL-safe id: /webhook/<id>, /admin/<id>")
    tenant_add.add_argument("--name", help="the municipality's name, e.g. 我孫子市 (default: the id)")
    tenant_add.add_argument("--timezone", default="Asia/Tokyo", help="its time zone (default Asia/Tokyo)")
    tenant_list = tenant_what.add_parser("list", help="one line per tenant: id, name, time zone, LINE channel")
    tenant_areas = tenant_what.add_parser("areas", help="set a tenant's areas (地区) and when the 気象庁's "
                                                        "bulletins start its roll-calls")
    tenant_areas.add_argument("id")
    tenant_areas.add_argument("file", help="CSV, one area a line: id,name,JMA city code (7 digits),"
                                           "JMA 細分区域 code (3 digits); '-' for stdin")
    tenant_areas.add_argument("--threshold", default="5弱", help="the 震度 that starts a roll-call (default 5弱)")
    tenant_areas.add_argument("--hold", default="0", help="minutes a roll-call waits so staff can stop it (default 0)")
    tenant_areas.add_argument("--drills", action="store_true", help="訓練 bulletins start drills here")
    for p in (tenant_add, tenant_list, tenant_areas):
        p.add_argument("--db", default="var/anpi.db", help="the SQLite file of `anpi serve` (default var/anpi.db)")
        p.add_argument("--redis", nargs="?", const=os.environ.get("ANPI_REDIS", "redis://127.0.0.1:6379/0"),
                       metavar="URL", help="the Kafka deployment's Redis instead: at URL, else ANPI_REDIS")

    key = commands.add_parser("key", help="the data key that seals phone numbers, names and secrets at rest")
    key_what = key.add_subparsers(dest="what", required=True, metavar="ACTION")
    key_new = key_what.add_parser("new", help="print a fresh key for ANPI_DATA_KEYS (put it first to rotate; keep "
                                              "the old ones after it while records sealed with them remain)")
    key_new.add_argument("--id", default=None, help="its id (letters, digits, _ or -; default a random one)")
    richmenu = commands.add_parser("richmenu", help="the LINE rich menu (元気です・助けてほしい・マイページ)")
    richmenu_what = richmenu.add_subparsers(dest="what", required=True, metavar="ACTION")
    richmenu_what.add_parser("install", help="make it every friend's default (the channel's access token from "
                                             "ANPI_CHANNEL_ACCESS_TOKEN; LINE at ANPI_LINE_API and ANPI_LINE_DATA_API)")

    readside = commands.add_parser("readside", help="keep the admin screen's read side in Redis from the Kafka "
                                                    "runtime's effects (settings from ANPI_*)")
    readside.add_argument("--from-beginning", action="store_true",
                          help="read the topics from their start (what was applied stays applied once)")

    quarantine = commands.add_parser("quarantine", help="inbound records the engine set aside: list them, or "
                                                        "apply one again after a fix")
    q_what = quarantine.add_subparsers(dest="what", required=True, metavar="ACTION")
    for name, text in (("list", "every entry, held or retried, with its reason"),
                       ("retry", "put one held entry back on the engine's way in")):
        q = q_what.add_parser(name, help=text)
        if name == "retry":
            q.add_argument("id", help="the entry's id, as `list` shows it")
        q.add_argument("--db", default="var/anpi.db", help="the SQLite file of `anpi serve` (default var/anpi.db)")
        q.add_argument("--tenant", default=os.environ.get("ANPI_TENANT", "demo"), help="(embedded) the tenant")
        q.add_argument("--kafka", action="store_true", help="the Kafka runtime's quarantine topic (ANPI_KAFKA, "
                                                             "ANPI_TOPIC_PREFIX) instead of a SQLite file")

    jma = commands.add_parser("jma", help="JMA earthquake bulletins (気象庁防災情報XML: VXSE51 震度速報, VXSE52 震源, "
                                          "VXSE53 震源・震度)")
    jma_what = jma.add_subparsers(dest="what", required=True, metavar="ACTION")
    jma_parse = jma_what.add_parser("parse", help="read one bulletin file; print it as one JSON line (event, kind, "
                                                  "status, hypocenter, 震度 per area and per city)")
    jma_parse.add_argument("file", help="a VXSE51, VXSE52 or VXSE53 XML file")
    jma_watch = jma_what.add_parser("watch", help="poll the 気象庁 feed (ANPI_JMA_FEED_URL, every ANPI_JMA_POLL_SECONDS, "
                                                  "at least 60) and start the roll-calls its bulletins call for, in "
                                                  "every tenant with areas")
    jma_where = jma_watch.add_mutually_exclusive_group()
    jma_where.add_argument("--db", default="var/anpi.db", help="the SQLite file of `anpi serve` (default var/anpi.db)")
    jma_where.add_argument("--kafka", action="store_true", help="the Kafka deployment instead: its Redis and inbound "
                                                                "topic (ANPI_KAFKA, ANPI_REDIS, ANPI_TOPIC_PREFIX)")
    jma_watch.add_argument("--once", action="store_true", help="one round, a summary line, and exit (0: it went "
                                                               "through; 1: the feed or the store failed)")

    bench = commands.add_parser("bench", help="measure the engine")
    bench_what = bench.add_subparsers(dest="what", required=True, metavar="WHAT")
    core = bench_what.add_parser("core", help="check cycles per second of the pure core, one process")
    core.add_argument("--members", type=int, default=100_000)
    core.add_argument("--days", type=int, default=30)
    core.add_argument("--answer-after", type=int, default=5, metavar="MINUTES",
                      help="each member taps OK this many minutes after each check")
    simulate_bench = bench_what.add_parser("simulate", help="`anpi simulate` end to end on a JSON scenario of the "
                                                            "same members and days as `bench core`, beside it")
    simulate_bench.add_argument("--members", type=int, default=20_000)
    simulate_bench.add_argument("--days", type=int, default=30)

    svc = commands.add_parser("services", help="start or stop the local Kafka broker and Redis server")
    svc_what = svc.add_subparsers(dest="what", required=True, metavar="ACTION")
    svc_up = svc_what.add_parser("up", help="start both (if not running) and wait until they answer")
    svc_up.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                        help="give up if they do not answer by then")
    svc_what.add_parser("down", help="stop both")

    kafka = bench_what.add_parser("kafka", help="ticks and taps per second through the subject agent on the real "
                                                "broker, beside a bare aiokafka loop doing the same work")
    kafka.add_argument("--members", type=int, default=100_000)
    kafka.add_argument("--only", choices=["agent", "bare"], help="run one of the two (no ratio)")
    bench_what.add_parser("tick", help="cost of a tick with 1,000 subjects due, in tables of 10,000 and 1,000,000")
    recovery = bench_what.add_parser("recovery", help="worker start over a changelog of N members' state")
    recovery.add_argument("--members", type=int, default=1_000_000)
    ingress = bench_what.add_parser("ingress", help="signed webhooks per second into the ingress over real HTTP, "
                                                    "each stored durably before its 200")
    ingress.add_argument("--requests", type=int, default=5000)
    ingress.add_argument("--sink", choices=["sqlite", "kafka"], default="sqlite",
                         help="sqlite: the embedded runtime's store (a temporary file); kafka: the inbound topic "
                              "of a fresh tenant on ANPI_KAFKA, de-duplicated in Redis at ANPI_REDIS")
    ingress.add_argument("--concurrency", type=int, default=64, help="requests in flight (default 64)")
    ingress.add_argument("--processes", type=int, default=1,
                         help="ingress processes on one port (SO_REUSEPORT; default 1)")
    ingress.add_argument("--profile", metavar="FILE", help="write a cProfile of the server's timed part here")
    sender = bench_what.add_parser("sender", help="seconds for the sender to deliver one check to N members "
                                                  "against linesim with LINE's rate limits, and the ratio to their floor")
    sender.add_argument("--members", type=int, default=100_000)
    burst = bench_what.add_parser("burst", help="a disaster roll-call end to end on the Kafka runtime: a notice to N "
                                                "members, 60 %% answering 「無事です」 on the drill's curve, the live tally")
    burst.add_argument("--members", type=int, default=100_000)
    burst.add_argument("--speedup", type=float, default=10.0,
                       help="the drill's 30 minutes of answers run this many times faster (default 10)")
    burst.add_argument("--ingress-processes", type=int, default=1, help="anpi ingress --processes (default 1)")
    burst.add_argument("--rollcall", action="store_true", help="the engine's roll-call (「無事です」 / "
                                                               "「助けが必要」) instead of a disaster notice")
    burst.add_argument("--share", type=float, default=0.6, help="the share of members who answer (default 0.6)")
    burst.add_argument("--seed", type=int, default=1)
    admin_bench = bench_what.add_parser("admin", help="the admin screen's overview and call queue over real HTTP, "
                                                      "for a tenant of N members built through the engine")
    admin_bench.add_argument("--members", type=int, default=1_000_000)
    admin_bench.add_argument("--days", type=int, default=3, help="days of checks and answers (default 3)")
    admin_bench.add_argument("--requests", type=int, default=50, help="timed requests per page (default 50)")
    admin_bench.add_argument("--warmup", type=int, default=3, help="requests per page before timing (default 3)")
    admin_bench.add_argument("--profile", metavar="FILE", help="write a cProfile of the server's timed part here")
    admin_bench.add_argument("--db", metavar="FILE", help="build into FILE and keep it; if FILE was built by "
                                                          "this bench before, measure it without building")

    args = parser.parse_args(argv)
    from streams.startup import guarded
    from streams.startup import data_keys
    return guarded(args.command, lambda: (data_keys(args.command), _run(args))[1])  # a bad setting: one line, exit 2 (streams/startup.py)


def _run(args) -> int:
    if args.command == "simulate":
        return _simulate(args)
    if args.command == "bench":
        from streams.tools import bench_core as benches
        if args.what == "burst":
            if args.members < 1 or args.speedup <= 0 or args.ingress_processes < 1 or not 0 < args.share <= 1:
                print("anpi bench burst: --members and --ingress-processes must be positive, --speedup above 0, "
                      "--share in (0, 1]", file=sys.stderr)
                return 2
            from streams.tools import bench_burst
            try:
                print(bench_burst.burst_bench(args.members, args.speedup, args.ingress_processes, args.share, args.seed,
                                              rollcall=args.rollcall))
            except RuntimeError as error:   # a process that did not start or stopped, a phase not done
                print(f"anpi bench burst: {error}", file=sys.stderr)
                return 1
        elif args.what == "kafka":
            from streams.tools import bench_kafka
            print(bench_kafka.kafka_bench(args.members, args.only))
        elif args.what == "tick":
            print(benches.tick_bench())
        elif args.what == "recovery":
            print(benches.recovery_bench(args.members))
        elif args.what in ("ingress", "sender"):
            from streams.tools import bench_edge
            if args.what == "ingress":
                if args.requests < 1 or args.concurrency < 1 or args.processes < 1:
                    print("anpi bench ingress: --requests, --concurrency and --processes must be positive",
                          file=sys.stderr)
                    return 2
                print(bench_edge.ingress_bench(args.requests, args.sink, args.concurrency, args.profile,
                                               processes=args.processes))
            else:
                if args.members < 1:
                    print("anpi bench sender: --members must be positive", file=sys.stderr)
                    return 2
                print(bench_edge.sender_bench(args.members))
        elif args.what == "admin":
            from streams.tools import bench_admin
            if args.members < 1 or args.days < 1 or args.requests < 1 or args.warmup < 0:
                print("anpi bench admin: --members, --days and --requests must be positive", file=sys.stderr)
                return 2
            print(bench_admin.admin_bench(args.members, args.days, args.requests, args.warmup, args.profile,
                                          args.db))
        elif args.what == "simulate":
            if args.members < 1 or args.days < 1:
                print("anpi bench simulate: --members and --days must be positive", file=sys.stderr)
                return 2
            print(benches.simulate_bench(args.members, args.days))
        else:
            print(benches.core_bench(args.members, args.days, args.answer_after))
        return 0
    if args.command == "ingress":
        if args.db is not None:
            from streams.embedded.ingress_main import main as embedded_ingress
            return embedded_ingress(args.db, args.host, args.port, args.processes)
        from streams.kafka.ingress_main import main as ingress_main
        return ingress_main(args.host, args.port, args.processes)
    if args.command == "sender":
        from streams.kafka.sender_app import main as sender_main
        return sender_main()
    if args.command == "serve":
        from streams.embedded.serve import main as serve_main
        return serve_main(args.db, args.host, args.port, args.roster)
    if args.command == "demo":
        if args.residents < 1 or args.days <= 0 or args.speed <= 0 or args.tenants < 1:
            print("anpi demo: --residents, --days, --speed and --tenants must be positive", file=sys.stderr)
            return 2
        from streams.demo.town import main as demo_main
        return demo_main(args.residents, args.days, args.speed, args.exit, args.seed, args.tenants, args.runtime)
    if args.command == "admin":
        from streams.admin import cli as admin_cli
        if args.what == "serve":
            return admin_cli.serve(args.host, args.port)
        if args.what == "unlock":
            return admin_cli.unlock(args.tenant, args.login, db=args.db, redis_url=args.redis)
        if args.redis:
            return admin_cli.create_user_redis(args.redis, args.tenant, args.login, args.role)
        return admin_cli.create_user(args.db, args.tenant, args.login, args.role)
    if args.command == "key":
        from streams import sealed
        line = sealed.new_key_line(args.id)
        sealed.parse_keys(line, "--id")   # the id's rule, said as the setting's
        print(line)
        return 0
    if args.command == "richmenu":
        return _richmenu_install()
    if args.command == "tenant":
        from streams.tenants import cli as tenant_cli
        if args.what == "add":
            return tenant_cli.add(args.id, args.name, args.timezone, args.db, args.redis)
        if args.what == "areas":
            return tenant_cli.areas(args.id, args.file, args.threshold, args.hold, args.drills, args.db, args.redis)
        return tenant_cli.list_tenants(args.db, args.redis)
    if args.command == "quarantine":
        from streams import quarantine
        return quarantine.command(args.what, getattr(args, "id", None), args.db, args.tenant, args.kafka, sys.stdout)
    if args.command == "jma":
        if args.what == "parse":
            return _jma_parse(args.file)
        if args.what == "watch":
            from streams.jma import watch
            return watch.main(None if args.kafka else args.db, args.kafka, args.once)
    if args.command == "readside":
        from streams.kafka.readside_app import main as readside_main
        return readside_main(args.from_beginning)
    if args.command == "worker":
        from streams.kafka.worker import main as worker_main
        return worker_main()
    if args.command == "services":
        from streams.tools import services
        return services.up(timeout=args.timeout) if args.what == "up" else services.down()
    return 2


def _simulate(args) -> int:
    from streams.process import tune_gc
    from streams.simulation import scenario
    from streams.simulation import simulator

    tune_gc()   # a month of a large town is millions of acyclic records: as `anpi bench core` runs

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
    out, lines = sys.stdout, simulator.JsonLines(loaded.zone)
    try:
        for start in range(0, len(effects), 10_000):   # a block at a time: fewer writes
            out.write("".join(lines.line(e) + "\n" for e in effects[start:start + 10_000]))
        out.flush()
    except BrokenPipeError:  # the reader stopped early (`| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush is quiet
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


def _jma_parse(path: str) -> int:
    import json
    from streams.jma import bulletin
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        print(f"anpi jma parse: {path}: cannot be read ({error.strerror or error})", file=sys.stderr)
        return 2
    try:
        parsed = bulletin.parse(data)
    except bulletin.BadBulletin as error:
        print(f"anpi jma parse: {path}: {error}", file=sys.stderr)
        return 2
    print(json.dumps(parsed.to_json(), ensure_ascii=False))
    return 0


def _richmenu_install() -> int:
    import asyncio
    from streams.line import richmenu
    token = os.environ.get("ANPI_CHANNEL_ACCESS_TOKEN")
    if not token:
        print("anpi richmenu: set ANPI_CHANNEL_ACCESS_TOKEN (the LINE channel's)", file=sys.stderr)
        return 2
    api = os.environ.get("ANPI_LINE_API", "https://api.line.me").rstrip("/")
    data_api = os.environ.get("ANPI_LINE_DATA_API") or ("https://api-data.line.me" if api == "https://api.line.me" else api)
    try:
        menu_id = asyncio.run(richmenu.install(api, data_api, token))
    except (richmenu.Failed, OSError) as error:
        print(f"anpi richmenu: {error}", file=sys.stderr)
        return 1
    print(f"anpi richmenu: {menu_id} is every friend's menu now")
    return 0


if __name__ == "__main__":
    sys.exit(main())
