"""Ops files are code: Prometheus config and alert rules pass promtool, every metric the
dashboard and the rules query is one the code exports, and docker-compose.yml validates.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

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


# The modules that declare metrics; every `*Metrics` class in them takes a registry.
METRICS_MODULES = ("consumers.metrics", "streamer.metrics")


def code_exposition() -> str:
    """The `/metrics` text of every process, each labelled metric set once.

    For now from the `*Metrics` classes on fresh registries (the learner's
    `LearnerMetrics`, the producer's where declared); it is meant to become a scrape of
    live processes.
    """
    texts = []
    for module_name in METRICS_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        for value in vars(module).values():
            if not (
                isinstance(value, type)
                and value.__module__ == module_name
                and value.__name__.endswith("Metrics")
            ):
                continue
            registry = CollectorRegistry()
            metrics = value(registry)
            for metric in vars(metrics).values():
                if isinstance(metric, MetricWrapperBase) and metric._labelnames:
                    metric.labels(*("0" for _ in metric._labelnames))
            texts.append(generate_latest(registry).decode())
    return "".join(texts)


@pytest.fixture(scope="module")
def exposition() -> str:
    text = code_exposition()
    assert "recstream_events_total" in text
    return text


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
