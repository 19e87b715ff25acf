"""The deployment, checked by reading the files that make it (no Docker engine here): the image and
the installed package hold everything `anpi` runs (each package the install takes is copied into
the image, each file a package reads at run time is in its package data), every compose service
says when it is healthy, and Prometheus scrapes each process on the port compose gives it."""
import fnmatch
import json
import re
import tomllib

import yaml
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def packages() -> list[str]:
    return [pattern.rstrip("*") for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]


def test_the_image_copies_every_package_the_install_takes():
    copied = set(re.findall(r"^COPY (\S+?)/? ", (ROOT / "Dockerfile").read_text(), flags=re.M))
    assert set(packages()) <= copied, set(packages()) - copied


def test_every_file_a_package_reads_at_run_time_is_in_its_package_data():
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    missing = []
    for top in packages():
        for path in (ROOT / top).rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc") or path.name == "README.md":
                continue
            relative = path.relative_to(ROOT)
            # the nearest package holding the file, and the file's path inside it
            for depth in range(len(relative.parts) - 1, 0, -1):
                package, inside = ".".join(relative.parts[:depth]), "/".join(relative.parts[depth:])
                if (ROOT.joinpath(*relative.parts[:depth]) / "__init__.py").exists():
                    break
            if not any(fnmatch.fnmatch(inside, pattern) for pattern in data.get(package, [])):
                missing.append(str(relative))
    assert not missing, missing


COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_compose_service_has_a_healthcheck():
    assert [name for name, service in COMPOSE["services"].items() if "healthcheck" not in service] == []


def test_every_anpi_process_gets_the_one_data_key_from_the_environment_and_none_makes_its_own():
    anpi = {name: service for name, service in COMPOSE["services"].items() if service.get("build")}
    keys = {name: service.get("environment", {}).get("ANPI_DATA_KEYS") for name, service in anpi.items()}
    assert set(keys.values()) == {"${ANPI_DATA_KEYS:?set it in .env (anpi key new)}"}, keys


def test_prometheus_scrapes_each_anpi_process_on_the_port_compose_gives_it():
    jobs = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())["scrape_configs"]
    scraped = {sd["names"][0]: sd["port"] for job in jobs for sd in job.get("dns_sd_configs", [])}
    anpi = {name for name, service in COMPOSE["services"].items() if service.get("build")}
    assert anpi <= set(scraped), anpi - set(scraped)
    for name, port in scraped.items():
        service = COMPOSE["services"][name]
        env = service.get("environment", {})
        given = {int(v) for k, v in env.items() if k.endswith("_PORT") and str(v).isdigit()}
        assert port in given and str(port) in map(str, service.get("expose", [])), (name, port, env)
        assert env.get("ANPI_WEB_HOST") == "0.0.0.0", name  # reachable from Prometheus' container


def unknown_series(exprs: dict[str, str]) -> list[tuple[str, str]]:
    """(where, name) of each anpi_* series the PromQL in `exprs` reads that no code of ours declares."""
    code = "\n".join(p.read_text() for p in (ROOT / "streams").rglob("*.py"))
    return [(where, name) for where, expr in exprs.items() for name in sorted(set(re.findall(r"\b(anpi_[a-z_]+)", expr)))
            if f'"{re.sub(r"_(total|bucket|sum|count|created)$", "", name)}"' not in code]


def test_every_series_an_alert_reads_is_one_anpi_serves():
    rules = [r for g in yaml.safe_load((ROOT / "deploy" / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    assert unknown_series({rule["alert"]: rule["expr"] for rule in rules}) == []


def test_the_grafana_board_reads_served_series_from_the_provisioned_prometheus():
    board = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "anpi.json").read_text())
    [source] = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    targets = {f"{panel['title']} {t['refId']}": t for panel in board["panels"] for t in panel["targets"]}
    assert len(targets) >= 10 and unknown_series({k: t["expr"] for k, t in targets.items()}) == []
    assert {t["datasource"]["uid"] for t in targets.values()} == {source["uid"]}
    assert source["url"] == "http://prometheus:9090" and "prometheus" in COMPOSE["services"]
    mounts = {volume.split(":")[0] for volume in COMPOSE["services"]["grafana"]["volumes"]}
    assert {"./deploy/grafana/provisioning", "./deploy/grafana/dashboards"} <= mounts
    assert all((ROOT / m).is_dir() for m in mounts if m.startswith("./"))
