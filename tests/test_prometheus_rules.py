"""conf/prometheus-rules.yml and conf/grafana-dashboard.json: valid, tested alerts over metrics that exist.

With ``promtool`` (Debian package ``prometheus``, installed by ``scripts/test``) the rules are checked by
``promtool check rules``, their alerts unit-tested by ``promtool test rules tests/promtool/*.yml``, and every
dashboard query is checked as PromQL. Without it those tests skip; the rest always runs: no YAML parser is
needed (PyYAML is not a dependency), the rules file is read line by line where its layout is known.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import gateway.metrics as gateway_metrics  # defines every gb28181_* metric in the default registry

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "conf" / "prometheus-rules.yml"
DASHBOARD = ROOT / "conf" / "grafana-dashboard.json"
PROMTOOL_TESTS = sorted((ROOT / "tests" / "promtool").glob("*.yml"))

# Series computed at scrape time from the running device registry (none without one): named by the collector.
SCRAPE_TIME_SERIES = set(gateway_metrics.DEVICE_SERIES.NAMES)
# Series Prometheus itself makes for every scrape target.
PROMETHEUS_SERIES = {"up"}

METRIC_RE = re.compile(r"\bgb28181_[a-z0-9_]+\b")
# Panels the dashboard must have, each named by a metric one of its queries uses.
REQUIRED_PANELS = {
    "camera online rate": "gb28181_channels_online_ratio",
    "camera intact rate": "gb28181_channels_intact_ratio",
    "devices online": "gb28181_devices_online",
    "devices registered": "gb28181_devices_registered",
    "keepalive timeouts": "gb28181_device_offline_total",
    "stream failures": "gb28181_stream_failures_total",
    "active streams": "gb28181_streams_active",
    "viewers": "gb28181_viewers",
    "first-frame latency": "gb28181_stream_first_frame_seconds_bucket",
    "RTP loss": "gb28181_rtp_lost_total",
    "alarms": "gb28181_alarms_total",
    "suppressed alarms": "gb28181_alarms_suppressed_total",
}
# Alerts the issue asks for (online rate, devices offline, keepalive timeouts, streams failing, gateway down),
# the intact rate the upper platforms check, and device alarms (floods, priority 1, storms).
REQUIRED_ALERTS = {
    "GB28181GatewayDown", "GB28181GatewayMissing", "GB28181CameraOnlineRateLow", "GB28181DeviceOnlineRateLow",
    "GB28181CameraIntactRateLow", "GB28181DeviceOffline", "GB28181KeepaliveTimeoutsRising",
    "GB28181StreamsFailing", "GB28181AlarmFlood", "GB28181HighPriorityAlarm", "GB28181AlarmRateHigh",
}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def exposed_series() -> set[str]:
    """Every series name the gateway's registry can expose (families without samples included)."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


KNOWN = exposed_series() | SCRAPE_TIME_SERIES | PROMETHEUS_SERIES


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`; scripts/test installs it)")
    return path


def run_promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------------------------------------- rules file

def rule_blocks() -> dict[str, str]:
    """Each alert's text (from its ``- alert:`` line to the next), comments removed, by alert name."""
    blocks: dict[str, str] = {}
    name = None
    for line in RULES.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#"):
            continue
        m = re.match(r"\s*- (alert|record): (\S+)\s*$", line)
        if m:
            name = m.group(2)
            assert m.group(1) == "alert", f"recording rule {name} in the alert rules file"
            assert name not in blocks, f"alert {name} defined twice"
            blocks[name] = ""
        elif re.match(r"\s*- name: ", line):
            name = None
        if name is not None:
            blocks[name] += line + "\n"
    return blocks


def test_rules_define_the_required_alerts() -> None:
    blocks = rule_blocks()
    assert REQUIRED_ALERTS <= blocks.keys()
    for name, text in blocks.items():
        assert name.startswith("GB28181"), name
        assert re.search(r"^\s+expr: ", text, re.M), f"{name}: no expr"
        severity = re.search(r"^\s+severity: (\S+)\s*$", text, re.M)
        assert severity and severity.group(1) in ("warning", "critical"), f"{name}: severity warning|critical"
        assert re.search(r"^\s+summary: ", text, re.M), f"{name}: no summary annotation"
        assert re.search(r"^\s+description: ", text, re.M), f"{name}: no description annotation"
        assert "{{ $labels.instance }}" in text or "absent(" in text, f"{name}: annotations should name the gateway"
        if "gb28181_device_up" in text:
            assert "{{ $labels.device_id }}" in text, f"{name}: per-device alert should name the device"


def test_rules_use_only_exposed_metrics() -> None:
    for name, text in rule_blocks().items():
        unknown = set(METRIC_RE.findall(text)) - KNOWN
        assert not unknown, f"{name} uses metrics the gateway does not expose: {sorted(unknown)}"


def test_every_alert_has_a_promtool_unit_test() -> None:
    assert PROMTOOL_TESTS, "no promtool unit tests in tests/promtool/"
    tested: set[str] = set()
    for path in PROMTOOL_TESTS:
        text = path.read_text(encoding="utf-8")
        assert "../../conf/prometheus-rules.yml" in text, f"{path.name} does not load conf/prometheus-rules.yml"
        for m in re.finditer(r"^\s+alertname: (\S+)\s*\n\s+exp_alerts:\s*\n\s+- exp_labels:", text, re.M):
            tested.add(m.group(1))
    missing = rule_blocks().keys() - tested
    assert not missing, f"alerts never shown firing in tests/promtool/: {sorted(missing)}"


def test_promtool_check_rules() -> None:
    proc = run_promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rule_blocks())} rules found" in proc.stdout, proc.stdout


@pytest.mark.parametrize("path", PROMTOOL_TESTS, ids=[p.name for p in PROMTOOL_TESTS])
def test_promtool_alert_unit_tests(path: Path) -> None:
    proc = run_promtool("test", "rules", path.name, cwd=path.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------- dashboard

def dashboard() -> dict:
    with DASHBOARD.open(encoding="utf-8") as f:
        return json.load(f)


def panels(dash: dict) -> list[dict]:
    """Every panel, rows' nested panels included, rows themselves excluded."""
    out: list[dict] = []
    for panel in dash["panels"]:
        if panel["type"] == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def expressions(dash: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of the dashboard, template variables included."""
    exprs = [(p["title"], t["expr"]) for p in panels(dash) for t in p.get("targets", [])]
    for var in dash.get("templating", {}).get("list", []):
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            exprs.append((f"variable {var['name']}", query))
    return exprs


def test_dashboard_is_valid_grafana_json() -> None:
    dash = dashboard()
    assert dash["uid"] == "gb28181-gateway"
    assert dash["title"]
    assert isinstance(dash["schemaVersion"], int)
    ids = [p["id"] for p in dash["panels"]] + [p["id"] for p in panels(dash) if p not in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dash):
        assert panel["title"] and panel.get("description"), panel["id"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", f"{panel['title']}: data source not the variable"
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "instance"} <= variables


def test_dashboard_queries_use_only_exposed_metrics() -> None:
    for title, expr in expressions(dashboard()):
        used = set(METRIC_RE.findall(expr))
        assert used or re.search(r"\bup\{", expr), f"{title}: {expr!r} uses no gateway metric"
        unknown = used - KNOWN
        assert not unknown, f"{title}: {expr!r} uses metrics the gateway does not expose: {sorted(unknown)}"


def test_dashboard_has_the_required_panels() -> None:
    used = {m for _, expr in expressions(dashboard()) for m in METRIC_RE.findall(expr)}
    missing = {what: metric for what, metric in REQUIRED_PANELS.items() if metric not in used}
    assert not missing, f"dashboard lacks panels for {missing}"
    keepalive = [e for _, e in expressions(dashboard()) if "gb28181_device_offline_total" in e]
    assert any("by (reason)" in e for e in keepalive), "keepalive timeouts must be shown by reason"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel query as a recording rule, so that ``promtool check rules`` parses it as PromQL."""
    exe = promtool()
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for n, (title, expr) in enumerate(expressions(dashboard())):
        if expr.startswith("label_values("):
            continue  # a Grafana function, not PromQL
        promql = expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
        lines += [f"      - record: dashboard:panel_{n}", f"        expr: {json.dumps(promql)}",
                  f"        labels: {{title: {json.dumps(title)}}}"]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = subprocess.run([exe, "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
