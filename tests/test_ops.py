"""Ops files are code: Prometheus config and alert rules pass promtool, every metric the
dashboard and the rules query is one the code exports, and docker-compose.yml validates.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from consumers.durability.policy import CheckpointPolicy, LocalCheckpoints
from consumers.ingest.memory import MemoryEventLog, MemoryEventSource
from consumers.metrics import LearnerMetrics
from consumers.model.config import ModelConfig
from consumers.service import ConsumeService
from consumers.sinks.memory import MemoryStore
from streamer.events import INVALID_REASONS, VIEWS_TOPIC
from tests.conftest import allocate_redis_db
from tests.learners import Learner, free_port, online, wait_for

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
RANGE = re.compile(r"\[[^\]]+\]")
# The Prometheus server (Debian's `prometheus` package; ops/test installs it).
PROMETHEUS_SERVER = os.environ.get("PROMETHEUS") or shutil.which("prometheus")


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


@dataclass(frozen=True)
class Live:
    """Processes serving /metrics: a producer and a learner's workers."""

    producer_port: int
    learner_ports: list[int]

    def exposition(self) -> str:
        return "".join(_scrape(port) for port in [*self.learner_ports, self.producer_port])


def two_free_ports() -> int:
    """A free port whose successor is free too (worker i serves on --metrics-port + i)."""
    while True:
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


@pytest.fixture(scope="module")
def live(
    kafka_bootstrap: str, kafka_admin: KafkaAdminClient, redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:  # fmt: skip
    """A producer in the middle of its stream (one bad record in it) and a learner with two
    workers that has learned, dead-lettered and checkpointed."""
    topic = f"test.ops.{uuid.uuid4().hex[:8]}"
    kafka_admin.create_topics(
        {topic: {"num_partitions": 2, "replication_factor": 1}}, wait_for_metadata=True
    )
    logs = tmp_path_factory.mktemp("ops")
    db = allocate_redis_db()
    producer_port = free_port()
    producer = subprocess.Popen(
        [sys.executable, "-m", "consumers.cli", "produce", "--bootstrap", kafka_bootstrap,
         "--topic", topic, "--source", "synthetic", "--rate", "100", "--events", "100000",
         "--progress", "false", "--metrics-port", str(producer_port)],
        env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=(logs / "produce.log").open("wb"),
    )  # fmt: skip
    bad = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    bad.send(topic, key=b"u1", value=b"not json").get(timeout=10)
    bad.close()
    port = two_free_ports()
    learner = Learner(
        ["--bootstrap", kafka_bootstrap, "--topic", topic, "--group", topic,
         "--redis", f"{redis_url}/{db}", "--users-topic", "",
         "--items-topic", "", "--dim", "8", "--workers", "2",
         "--max-users", "10000", "--max-items", "10000",
         "--checkpoint-dir", str(logs / "checkpoints"), "--checkpoint-every-events", "50"],
        logs / "learner.log",
        metrics_port=port,
    ).start()  # fmt: skip
    processes = Live(producer_port, [port, port + 1])
    try:
        wait_for(
            lambda: all(
                "recstream_checkpoint_seconds_count" in _scrape(port)
                for port in processes.learner_ports
            ),
            90,
            lambda: "two workers learning and checkpointing\n" + learner.log(),
        )
        wait_for(
            lambda: 'outcome="invalid"' in processes.exposition(),
            60,
            lambda: "a dead letter\n" + learner.log(),
        )
        wait_for(lambda: "recstream_produced_total" in _scrape(producer_port), 60, "producer")
        yield processes
    finally:
        producer.kill()
        producer.wait()
        learner.stop()


@pytest.fixture(scope="module")
def exposition(live: Live) -> str:
    """What the live processes serve, scraped over HTTP."""
    return live.exposition()


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
    learners = {
        name: service for name, service in compose_learners().items() if "profiles" not in service
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


def compose_learners() -> dict[str, Any]:
    services: dict[str, Any] = load_yaml(COMPOSE)["services"]
    return {
        name: service
        for name, service in services.items()
        if (service.get("command") or [None])[0] == "consume"
    }


def flag(command: list[str], name: str, default: str) -> str:
    return command[command.index(name) + 1] if name in command else default


def test_the_compare_profile_runs_each_model_in_its_own_group_and_prefix_all_scraped() -> None:
    """Models side by side: each learner its own --model, group and prefix (never one
    prefix for two models), and every learner's job label is the one the dashboard and
    the alerts select."""
    learners = compose_learners()
    commands = [service["command"] for service in learners.values()]
    assert len(learners) >= 2, sorted(learners)
    for name in ("--model", "--group", "--prefix"):
        values = [flag(command, name, f"default {name}") for command in commands]
        assert len(set(values)) == len(values), (name, values)
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    discovered = {
        entry_name
        for job in config["scrape_configs"]
        for entry in job.get("dns_sd_configs", [])
        for entry_name in entry["names"]
        if {"target_label": "job", "replacement": "recstream-learner"}
        in job.get("relabel_configs", [])
    }
    compared = {name for name, service in learners.items() if "profiles" in service}
    assert compared and compared <= discovered


# --- what a dashboard shows from the start, and how ---------------------------------------


def test_every_known_dead_letter_reason_is_exported_at_zero_from_the_start() -> None:
    """ "Dead letters by reason" shows zeros, not "No data", before the first bad record."""
    registry = CollectorRegistry()
    LearnerMetrics(registry)
    for reason in INVALID_REASONS:
        assert registry.get_sample_value("recstream_dead_letters_total", {"reason": reason}) == 0


@pytest.mark.parametrize("checkpoints", [False, True])
def test_the_learner_exports_whether_it_checkpoints(checkpoints: bool, tmp_path: Path) -> None:
    """RecstreamCheckpointStale only watches learners that write checkpoints."""
    registry = CollectorRegistry()
    ConsumeService(
        MemoryEventSource(MemoryEventLog(), VIEWS_TOPIC, "learners"),
        *online(ModelConfig(dim=4), MemoryStore()),
        LearnerMetrics(registry),
        checkpoints=LocalCheckpoints(CheckpointPolicy(tmp_path)) if checkpoints else None,
    )
    assert registry.get_sample_value("recstream_checkpoint_enabled") == float(checkpoints)


def test_a_stat_and_a_graph_of_one_quantity_use_one_window() -> None:
    """The same query with different range windows (a stat's fixed [5m] under a graph's
    $__rate_interval) shows two different numbers for one thing."""
    windows: dict[str, set[str]] = {}
    for expr in dashboard_queries():
        for window in RANGE.findall(expr):
            windows.setdefault(RANGE.sub("[]", expr), set()).add(window)
    assert {expr: found for expr, found in windows.items() if len(found) > 1} == {}


def test_table_rows_and_their_capacity_share_a_log_scale() -> None:
    """Capacity (10M) and rows in use (1,000) on one linear axis flatten the rows to 0."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [
        panel
        for panel in dashboard_panels(dashboard)
        if {"recstream_embedding_rows", "recstream_embedding_capacity_rows"}
        <= set().union(*(queried_metrics(t["expr"]) for t in panel.get("targets", [])))
    ]
    assert panels
    for panel in panels:
        scale = panel["fieldConfig"]["defaults"]["custom"].get("scaleDistribution", {})
        assert scale.get("type") == "log", panel["title"]


# --- a real Prometheus server -------------------------------------------------------------


@pytest.mark.skipif(PROMETHEUS_SERVER is None, reason="prometheus not installed")
def test_a_real_prometheus_has_data_for_every_dashboard_query_and_evaluates_every_rule(
    live: Live, tmp_path: Path
) -> None:
    """The repository's scrape config and rules, pointed at the live processes (scraped
    every second): every dashboard query returns data, every rule evaluates cleanly."""
    port = free_port()
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS / "alerts.yml")]
    targets = {
        "recstream-learner": [f"127.0.0.1:{p}" for p in live.learner_ports],
        "recstream-producer": [f"127.0.0.1:{live.producer_port}"],
        "prometheus": [f"127.0.0.1:{port}"],
    }
    # the compare profile's learner is found by DNS: it has no place here
    jobs = [job for job in config["scrape_configs"] if job["job_name"] in targets]
    config["scrape_configs"] = jobs
    for job in jobs:
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))
    log = tmp_path / "prometheus.log"
    server = subprocess.Popen(
        [str(PROMETHEUS_SERVER), f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api/v1/"
    queries = [GRAFANA_VARIABLES.sub("15s", expr) for expr in dashboard_queries()]
    try:
        wait_for(lambda: _api(api + "status/buildinfo") is not None, 30, log.read_text)
        empty: list[str] = []

        def every_query_has_data() -> bool:
            empty[:] = [q for q in queries if not _query(api, q)]
            return not empty

        wait_for(every_query_has_data, 60, lambda: f"data for {empty}")
        rules: list[dict[str, Any]] = []

        def every_rule_evaluated() -> bool:
            groups = (_api(api + "rules") or {}).get("groups", [])
            rules[:] = [rule for group in groups for rule in group["rules"]]
            return bool(rules) and all(rule["health"] != "unknown" for rule in rules)

        wait_for(every_rule_evaluated, 30, "every rule evaluated")
        assert len(rules) == len(alert_queries())
        assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
        for expr in alert_queries():
            _query(api, expr)  # raises on an error
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _api(url: str) -> Any:
    """The `data` of a Prometheus API answer; None while it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
    except OSError:
        return None
    assert body["status"] == "success", body
    return body["data"]


def _query(api: str, expr: str) -> list[Any]:
    """An instant query's result; fails on a query error (HTTP 400 and its message)."""
    url = api + "query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{expr}: {error.read().decode()}") from error
    assert body["status"] == "success", (expr, body)
    return list(body["data"]["result"])
