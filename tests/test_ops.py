"""Ops files are code: Prometheus config and alert rules pass promtool, every metric the
dashboard and the rules query is one the code exports, and docker-compose.yml validates.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import allocate_redis_db
from tests.learners import Learner, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "ops" / "prometheus"
DASHBOARD = ROOT / "ops" / "grafana" / "dashboards" / "recstream.json"
COMPOSE = ROOT / "docker-compose.yml"

METRIC = re.compile(r"\brecstream_[a-z_]+\b")
# A selector's matchers: `recstream_x{a="1", b=~"2"}`.
SELECTOR = re.compile(r"\b(recstream_[a-z_]+)\s*\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count", "_created")
# Labels Prometheus attaches at scrape time, not the process.
TARGET_LABELS = {"job", "instance"}
# Grafana's interval variables, replaced by a duration to make the queries plain PromQL.
GRAFANA_VARIABLES = re.compile(r"\$__(rate_interval|interval|range)\b")


def load_yaml(path: Path) -> Any:
    """Parsed YAML; the test is skipped where PyYAML is missing."""
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(path.read_text())


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(PROMETHEUS / "promtool.sh"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


# --- what the ops files query ----------------------------------------------------------


def dashboard_panels(node: Any) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in node.get("panels", []):
        yield panel
        yield from dashboard_panels(panel)


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def alert_queries() -> list[str]:
    rules = load_yaml(PROMETHEUS / "alerts.yml")
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def queried_metrics(expr: str) -> set[str]:
    return set(METRIC.findall(expr))


def queried_labels(expr: str) -> dict[str, set[str]]:
    """Metric name -> the label names its selectors match on (target labels left out)."""
    labels: dict[str, set[str]] = {}
    for name, matchers in SELECTOR.findall(expr):
        found = set(MATCHER_LABEL.findall(matchers)) - TARGET_LABELS
        labels.setdefault(name, set()).update(found)
    return labels


# --- what the code exports --------------------------------------------------------------


def exported_metric_names(text: str) -> set[str]:
    """Every metric name a Prometheus exposition (`/metrics` text) offers to queries.

    Sample names (`x_total`, `x_bucket`, `x_sum`, ...) and family names; a counter
    family declared without samples yet (a labelled metric never set) is offered as
    `x_total`, and a histogram family as its base name, which `covers` expands.
    """
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        for sample in family.samples:
            names.add(sample.name)
    return names


def exported_labels(text: str) -> dict[str, set[str]]:
    """Metric name -> label names seen on its samples (histogram `le` left out)."""
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names = set(sample.labels) - {"le"}
            labels.setdefault(sample.name, set()).update(names)
            labels.setdefault(family.name, set()).update(names)
    return labels


def covers(exported: set[str], name: str) -> bool:
    if name in exported:
        return True
    return any(name.endswith(s) and name.removesuffix(s) in exported for s in HISTOGRAM_SUFFIXES)


@pytest.fixture(scope="module")
def exposition(
    kafka_bootstrap: str, kafka_admin: KafkaAdminClient, redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:  # fmt: skip
    """What live processes serve: a learner that has learned and dead-lettered, and a
    producer in the middle of its stream, each scraped over HTTP."""
    topic = f"test.ops.{uuid.uuid4().hex[:8]}"
    kafka_admin.create_topics(
        {topic: {"num_partitions": 2, "replication_factor": 1}}, wait_for_metadata=True
    )
    logs = tmp_path_factory.mktemp("ops")
    db = allocate_redis_db()
    producer_port = free_port()
    producer = subprocess.Popen(
        [sys.executable, "-m", "consumers.cli", "produce", "--bootstrap", kafka_bootstrap,
         "--topic", topic, "--source", "synthetic", "--rate", "100", "--events", "3000",
         "--progress", "false", "--metrics-port", str(producer_port)],
        env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=(logs / "produce.log").open("wb"),
    )  # fmt: skip
    bad = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    bad.send(topic, key=b"u1", value=b"not json").get(timeout=10)
    bad.close()
    learner = Learner(
        ["--bootstrap", kafka_bootstrap, "--topic", topic, "--group", topic,
         "--redis", f"{redis_url}/{db}", "--users-topic", "", "--dim", "8",
         "--checkpoint-dir", str(logs / "checkpoints"), "--checkpoint-every-events", "50"],
        logs / "learner.log",
    ).start()  # fmt: skip
    try:
        wait_for(lambda: "recstream_events_total" in _scrape(learner.metrics_port), 60, "learner")
        wait_for(
            lambda: (
                'outcome="invalid"' in _scrape(learner.metrics_port)
                and "recstream_checkpoint_seconds_count" in _scrape(learner.metrics_port)
            ),
            60,
            "a dead letter and a checkpoint\n" + learner.log(),
        )
        wait_for(lambda: "recstream_produced_total" in _scrape(producer_port), 60, "producer")
        yield _scrape(learner.metrics_port) + _scrape(producer_port)
    finally:
        producer.kill()
        producer.wait()
        learner.stop()


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


# --- the tests ----------------------------------------------------------------------------


def test_prometheus_config_is_valid() -> None:
    result = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", str(PROMETHEUS / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_severity_summary_description_and_a_unit_test() -> None:
    rules = load_yaml(PROMETHEUS / "alerts.yml")
    alerts = [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]
    for rule in alerts:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"].get("summary"), rule["alert"]
        assert rule["annotations"].get("description"), rule["alert"]
    tests = load_yaml(PROMETHEUS / "alerts_test.yml")["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    names = {rule["alert"] for rule in alerts}
    assert names - firing == set(), "alerts without a firing test case"
    assert names - quiet == set(), "alerts without a not-firing test case"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each dashboard query as a recording rule."""
    queries = dashboard_queries()
    assert queries
    rules = [
        {"record": f"dashboard:query_{index}", "expr": GRAFANA_VARIABLES.sub("1m", expr)}
        for index, expr in enumerate(queries)
    ]
    path = tmp_path / "dashboard_rules.yml"
    # JSON is YAML: no PyYAML needed to write the rule file.
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_uses_the_provisioned_datasource() -> None:
    datasources = load_yaml(
        ROOT / "ops" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    )
    uids = {source["uid"] for source in datasources["datasources"]}
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] in uids, panel["title"]


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_queried_metric_is_exported(source: str, exposition: str) -> None:
    queries = dashboard_queries() if source == "dashboard" else alert_queries()
    queried = set().union(*(queried_metrics(expr) for expr in queries))
    assert queried, f"no recstream_ metric found in the {source} queries"
    exported = exported_metric_names(exposition)
    missing = sorted(name for name in queried if not covers(exported, name))
    assert missing == [], f"{source} queries metrics the code does not export"


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_queried_label_is_exported(source: str, exposition: str) -> None:
    queries = dashboard_queries() if source == "dashboard" else alert_queries()
    exported = exported_labels(exposition)
    missing = []
    for expr in queries:
        for name, labels in queried_labels(expr).items():
            absent = labels - exported.get(name, set())
            missing += [f"{name}{{{label}}}" for label in sorted(absent)]
    assert sorted(set(missing)) == [], f"{source} matches on labels the code does not export"


def test_exposition_parser_sees_histograms_counters_and_unset_families() -> None:
    text = (
        "# HELP recstream_a_seconds A.\n# TYPE recstream_a_seconds histogram\n"
        'recstream_a_seconds_bucket{le="1.0"} 1.0\nrecstream_a_seconds_bucket{le="+Inf"} 1.0\n'
        "recstream_a_seconds_count 1.0\nrecstream_a_seconds_sum 0.5\n"
        "# HELP recstream_b_total B.\n# TYPE recstream_b_total counter\n"
    )
    exported = exported_metric_names(text)
    assert covers(exported, "recstream_a_seconds_bucket")
    assert covers(exported, "recstream_a_seconds_count")
    assert covers(exported, "recstream_b_total")
    assert not covers(exported, "recstream_c")
    assert queried_metrics('sum(rate(recstream_a_seconds_bucket{k="10"}[5m]))') == {
        "recstream_a_seconds_bucket"
    }
    assert queried_labels('recstream_x{job="j", k="10", window=~"r.*"} > 0') == {
        "recstream_x": {"k", "window"}
    }


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_file_validates() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_the_compose_services() -> None:
    """Every scrape target is a service of docker-compose.yml on the port it serves."""
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    services = load_yaml(COMPOSE)["services"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"recstream-learner", "recstream-producer"} <= set(jobs)
    for name in ("recstream-learner", "recstream-producer"):
        for static in jobs[name]["static_configs"]:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                assert host in services, target
                assert port in [str(p) for p in services[host].get("expose", [])], target


def test_the_compose_stack_runs_one_model_whose_workers_are_all_scraped() -> None:
    """One learner service (`--workers N`), not several models under one prefix; each
    worker's metrics port (9400 + i) is exposed, health-checked and scraped."""
    services = load_yaml(COMPOSE)["services"]
    learners = {
        name: service
        for name, service in services.items()
        if (service.get("command") or [None])[0] == "consume"
    }
    assert len(learners) == 1, sorted(learners)
    ((name, service),) = learners.items()
    command = service["command"]
    workers = int(command[command.index("--workers") + 1]) if "--workers" in command else 1
    ports = [str(9400 + index) for index in range(workers)]
    assert [str(port) for port in service["expose"]] == ports
    assert all(port in " ".join(service["healthcheck"]["test"]) for port in ports)
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "recstream-learner"]
    targets = [target for static in job["static_configs"] for target in static["targets"]]
    assert targets == [f"{name}:{port}" for port in ports]
