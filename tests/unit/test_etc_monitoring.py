# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The monitoring files under etc/ match the metrics nodepool produces.

* ``statsd-exporter-mapping.yaml`` is checked against the statsd names a
  real :class:`nodepool.stats.StatsReporter` sends over UDP: every name is
  mapped (first matching rule, as statsd_exporter does), and every rule
  maps some name.
* The metric names in ``prometheus-alerts.yaml`` and in the targets of
  ``grafana-dashboard.json`` are either served by the launcher's web app
  (read from a scrape of a real :class:`nodepool.web.app.WebApp`
  registry) or produced by the mapping.

A renamed statsd key, web app gauge or label therefore fails here.  When
``promtool`` is installed, the alert rules and the dashboard's queries
are also checked by it and a few alerts are run against made-up series.
"""

import json
import os
import re
import shutil
import subprocess
import types

import prometheus_client
import pytest
import statsd as statsd_lib
import yaml
from prometheus_client.parser import text_string_to_metric_families

from nodepool import stats
from nodepool.web.app import WebApp
from nodepool.zk.models import NodeState
from tests.fixtures.statsd import StatsdListener
from tests.unit.test_stats import (make_node, make_request, pool_component,
                                   pool_config, provider_config)

ETC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "etc")

PROM_NAME = re.compile(r"\A[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"\A[a-zA-Z_][a-zA-Z0-9_]*\Z")
WIRE_TYPES = {"c": "counter", "g": "gauge", "ms": "observer"}
# Labels Prometheus adds to every scraped series, and the metric it makes
# for every target.
TARGET_LABELS = {"job", "instance"}
BUILTIN_METRICS = {"up": set()}


def _load_yaml(name):
    with open(os.path.join(ETC, name)) as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def mapping():
    return _load_yaml("statsd-exporter-mapping.yaml")


@pytest.fixture(scope="module")
def alerts():
    return _load_yaml("prometheus-alerts.yaml")


@pytest.fixture(scope="module")
def dashboard():
    with open(os.path.join(ETC, "grafana-dashboard.json")) as f:
        return json.load(f)


# -- what nodepool produces ---------------------------------------------------

class _Provider:
    """A launcher's provider as the web app reads it."""

    def __init__(self, config):
        self.config = config
        self.name = config.name

    def api_rates(self):
        return [{"limiter": "api", "rate": 4.0, "ceiling": 10.0,
                 "adaptive": True, "throttles": 0}]

    def capacity_entries(self):
        return [{"type": "m5.large", "zone": "z1", "failures": 1,
                 "seconds_left": 30.0}]


def scrape_webapp():
    """``{metric name: label names}`` from a scrape of a web app's
    registry over a launcher with one pool, node, request and limiter."""
    pools = [pool_component("p1", "main", ["l1"])]
    node = make_node(NodeState.READY, provider="p1", labels=("l1",))
    request = make_request(["l1"], "200-0000000001")
    request.created_time = 1700000000.0
    services = types.SimpleNamespace(
        registry=types.SimpleNamespace(pools=lambda: pools),
        node_cache={node.id: node},
        request_cache={"r1": request})
    config = provider_config("p1", pool_config("main", 5))
    launcher = types.SimpleNamespace(services=services,
                                     providers={"p1": _Provider(config)})
    text = prometheus_client.generate_latest(WebApp(launcher).registry)
    served = {}
    for family in text_string_to_metric_families(text.decode("utf-8")):
        for sample in family.samples:
            served.setdefault(sample.name, set()).update(sample.labels)
    return served


# Every StatsReporter method that sends something; a new one must be
# added to record_statsd() below (and mapped), or this list fails.
REPORTER_METHODS = {
    "record_launch", "record_node_launch", "record_leaked",
    "update_global_gauges", "update_node_gauges", "update_request_gauges",
    "update_provider_limits", "update_tenant_limits", "update_pool_gauges",
    "update_api_rates", "update_capacity", "update_zk_queues",
    "record_image_build", "record_image_upload", "update_build_requests",
    "update_builder_workers",
}


def record_statsd():
    """``{(name, wire type)}`` a real reporter sends over UDP when every
    method is called once with typical arguments."""
    with StatsdListener() as listener:
        client = statsd_lib.StatsClient(listener.host, listener.port)
        reporter = stats.StatsReporter(client, pool_gauge_interval=0)
        pools = [pool_component("p1", "main", ["l1"])]
        nodes = [make_node(NodeState.READY, provider="p1", labels=("l1",))]
        requests = [make_request(["l1"])]
        provider = provider_config("p1", pool_config("main", 5))
        limits = {"tenant.a": {"cores": 10}}
        reporter.record_launch("ready", 1.5, provider="p1", az="z1",
                               requestor="zuul.example")
        reporter.record_launch("error.quota", 1.5, provider="p1", az="z1",
                               requestor="zuul.example")
        nodes[0].az, nodes[0].requestor = "z2", "NodePool:min-ready"
        reporter.record_node_launch(nodes[0], "error.keyscan", 2.0)
        reporter.record_leaked("p1", "instances", 2)
        reporter.update_global_gauges(nodes, requests, pools)
        reporter.update_node_gauges(nodes, pools)
        reporter.update_request_gauges(requests, pools)
        reporter.update_provider_limits(provider)
        reporter.update_tenant_limits(limits)
        reporter.update_pool_gauges(provider, limits)
        reporter.update_api_rates("p1", _Provider(provider).api_rates())
        reporter.update_capacity("p1", _Provider(provider).capacity_entries())
        reporter.update_zk_queues(3, {name: (1, 2)
                                      for name in stats.ZK_CACHES},
                                  hostname="launcher1")
        reporter.record_image_build("ubuntu", 60.0, 0, 1700000000.0,
                                    sizes={"qcow2": 1024})
        reporter.record_image_upload("ubuntu", "p1", 30.0)
        reporter.update_build_requests({"ubuntu": True})
        reporter.update_builder_workers(
            [("ubuntu", stats.WORKER_BUILDING)],
            [("ubuntu", "p1", stats.WORKER_UPLOADING)],
            fqdn="builder1.example.org")
        listener.sync()
        assert not listener.malformed()
        return {(name, kind) for name, _, kind in listener.metrics()}


@pytest.fixture(scope="module")
def emitted():
    return record_statsd()


@pytest.fixture(scope="module")
def served():
    return scrape_webapp()


# -- statsd_exporter's mapping, as far as these files use it ------------------

def rule_pattern(rule, defaults):
    """The regex statsd_exporter matches a rule with: a glob's ``*``
    stands for (part of) one dot-separated component."""
    if rule.get("match_type", defaults.get("match_type", "glob")) == "regex":
        return re.compile(rule["match"])
    body = r"\.".join(re.escape(part).replace(r"\*", "([^.]*)")
                      for part in rule["match"].split("."))
    return re.compile(r"\A%s\Z" % body)


def rule_type(rule):
    kind = rule.get("match_metric_type")
    return "observer" if kind == "timer" else kind


def map_name(config, name, wire_type):
    """``(rule index, metric name, labels)`` statsd_exporter gives a
    statsd metric, or None when no rule matches (first match wins)."""
    defaults = config.get("defaults") or {}
    for index, rule in enumerate(config["mappings"]):
        kind = rule_type(rule)
        if kind is not None and kind != WIRE_TYPES[wire_type]:
            continue
        match = rule_pattern(rule, defaults).search(name)
        if match is None:
            continue
        labels = {key: re.sub(r"\$(\d+)",
                              lambda m: match.group(int(m.group(1))), value)
                  for key, value in (rule.get("labels") or {}).items()}
        return index, rule["name"], labels
    return None


def produced_metrics(config, emitted):
    """``{Prometheus name: label names}`` the mapping makes of
    ``emitted``, with a histogram's ``_bucket``/``_sum``/``_count``."""
    produced = {}
    for name, wire_type in emitted:
        mapped = map_name(config, name, wire_type)
        if mapped is None:
            continue
        _, metric, labels = mapped
        if WIRE_TYPES[wire_type] != "observer":
            produced.setdefault(metric, set()).update(labels)
            continue
        for suffix, extra in (("_bucket", {"le"}), ("_sum", set()),
                              ("_count", set())):
            produced.setdefault(metric + suffix, set()).update(
                set(labels) | extra)
    return produced


def test_mapping_rules_well_formed(mapping):
    defaults = mapping["defaults"]
    assert defaults["observer_type"] == "histogram"
    buckets = defaults["histogram_options"]["buckets"]
    assert buckets == sorted(buckets) and len(set(buckets)) == len(buckets)
    seen = set()
    for rule in mapping["mappings"]:
        assert set(rule) <= {"match", "match_type", "match_metric_type",
                             "name", "labels"}, rule
        assert rule_type(rule) in {"counter", "gauge", "observer"}, rule
        assert PROM_NAME.match(rule["name"]), rule
        assert all(LABEL_NAME.match(key) for key in rule.get("labels", {}))
        assert (rule["name"].endswith("_total")
                == (rule_type(rule) == "counter")), rule
        key = (rule["match"], rule_type(rule))
        assert key not in seen, "duplicate rule %s" % (key,)
        seen.add(key)


def test_every_statsd_name_is_mapped(mapping, emitted):
    unmapped = sorted(metric for metric in emitted
                      if map_name(mapping, *metric) is None)
    assert not unmapped, "statsd names without a mapping rule: %s" % unmapped


def test_every_rule_maps_a_statsd_name(mapping, emitted):
    used = {map_name(mapping, *metric)[0] for metric in emitted}
    unused = [rule["match"] for index, rule in enumerate(mapping["mappings"])
              if index not in used]
    assert not unused, "rules matching nothing nodepool sends: %s" % unused


def test_recorded_every_reporter_method():
    public = {name for name in vars(stats.StatsReporter)
              if name.startswith(("record_", "update_"))}
    assert public == REPORTER_METHODS


def test_mapped_examples(mapping):
    def mapped(name, wire_type):
        return map_name(mapping, name, wire_type)[1:]

    assert mapped("nodepool.launch.provider.p1.error.quota", "c") == (
        "nodepool_launch_provider_error_total",
        {"provider": "p1", "reason": "quota"})
    assert mapped("nodepool.launch.provider.p1.z1.ready", "ms") == (
        "nodepool_launch_provider_az_ready_duration_seconds",
        {"provider": "p1", "az": "z1"})
    assert mapped("nodepool.provider.p1.leaked.INSTANCEs", "c") == (
        "nodepool_provider_leaked_total",
        {"provider": "p1", "kind": "INSTANCEs"})
    assert mapped("nodepool.launcher.h1.zk.node_cache.playback_queue",
                  "g") == ("nodepool_launcher_zk_playback_queue",
                           {"hostname": "h1", "cache": "node_cache"})
    assert mapped("nodepool.builder.b1.example.org.image.u.provider.p1."
                  "upload.state", "g") == (
        "nodepool_builder_upload_state",
        {"builder": "b1.example.org", "image": "u", "provider": "p1"})
    # A gauge never lands on a counter's rule and vice versa.
    assert map_name(mapping, "nodepool.launch.ready", "g") is None


def test_mapping_matches_web_app_names(mapping, emitted, served):
    """Gauges the web app serves too have its names and labels, so the
    dashboard and alerts work with either source; and one name never
    gets two label sets."""
    label_sets = {}
    for metric in emitted:
        _, name, labels = map_name(mapping, *metric)
        label_sets.setdefault(name, set()).add(frozenset(labels))
    assert all(len(sets) == 1 for sets in label_sets.values()), label_sets
    shared = set(label_sets) & set(served)
    assert {"nodepool_nodes", "nodepool_provider_nodes",
            "nodepool_label_nodes", "nodepool_provider_max_servers",
            "nodepool_provider_pool_addressable_requests",
            "nodepool_provider_api_rate",
            "nodepool_provider_capacity_cooldowns"} <= shared
    for name in shared:
        assert set(next(iter(label_sets[name]))) == served[name], name


# -- PromQL in the alerts and the dashboard -----------------------------------

GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"')
IDENT = re.compile(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?!\w)(\s*\()?")
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def parse_query(expr):
    """``(metrics, matchers, grouping labels)`` of a PromQL expression:
    ``metrics`` the metric names it selects, ``matchers`` ``(metric,
    label)`` pairs of its selectors, ``grouping labels`` the labels of its
    by/without/on/ignoring clauses.  Enough for the queries here, not a
    full parser."""
    matchers = set()
    for name, body in SELECTOR.findall(expr):
        for label, _ in MATCHER.findall(body):
            matchers.add((name, label))
    bare = SELECTOR.sub(lambda m: m.group(1) or "", expr)
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    grouping = set()
    for _, labels in GROUPING.findall(bare):
        grouping.update(label.strip() for label in labels.split(",")
                        if label.strip())
    bare = GROUPING.sub("", bare)
    metrics = {name for name, call in IDENT.findall(bare)
               if not call and name not in KEYWORDS}
    return metrics, matchers, grouping


def test_parse_query():
    metrics, matchers, grouping = parse_query(
        'sum by (provider, le) (rate(a_b{provider=~"$p", state!="x"}'
        '[$__rate_interval])) / on (provider) c > 0 and bool d offset 5m')
    assert metrics == {"a_b", "c", "d"}
    assert matchers == {("a_b", "provider"), ("a_b", "state")}
    assert grouping == {"provider", "le"}


def check_query(expr, known):
    """Problems with ``expr`` given ``known`` ``{metric: label names}``."""
    metrics, matchers, grouping = parse_query(expr)
    problems = ["unknown metric %s" % name for name in sorted(metrics)
                if name not in known]
    for name, label in sorted(matchers):
        if name in known and label not in known[name] | TARGET_LABELS:
            problems.append("%s has no label %s" % (name, label))
    labels = set().union(*(known.get(name, set()) for name in metrics))
    for label in sorted(grouping - labels - TARGET_LABELS):
        problems.append("no metric of the query has label %s" % label)
    return problems


@pytest.fixture(scope="module")
def known(mapping, emitted, served):
    names = dict(BUILTIN_METRICS)
    names.update(produced_metrics(mapping, emitted))
    for name, labels in served.items():
        names[name] = names.get(name, set()) | labels
    return names


def test_check_query_catches_drift(known):
    assert check_query("max by (state) (nodepool_nodes)", known) == []
    assert check_query("nodepool_node", known) == [
        "unknown metric nodepool_node"]
    assert check_query('nodepool_nodes{status="ready"}', known) == [
        "nodepool_nodes has no label status"]
    assert check_query("sum by (zone) (nodepool_provider_nodes)", known) == [
        "no metric of the query has label zone"]


def alert_rules(alerts):
    return [rule for group in alerts["groups"] for rule in group["rules"]]


def test_alert_rules_well_formed(alerts):
    rules = alert_rules(alerts)
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels",
                             "annotations"}, rule["alert"]
        assert re.match(r"\A\d+[smh]\Z", rule.get("for", "0s"))
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]


def test_alerts_cover_the_brief(alerts):
    """The issue's four kinds of alert, by the metrics they read."""
    used = set()
    for rule in alert_rules(alerts):
        used |= parse_query(rule["expr"])[0]
    assert {"nodepool_launch_provider_error_total",
            "nodepool_provider_leaked_total",
            "nodepool_provider_pool_addressable_requests",
            "nodepool_label_oldest_request_age_seconds",
            "nodepool_launcher_zk_connection_queue",
            "nodepool_launcher_zk_event_queue",
            "nodepool_launcher_zk_playback_queue"} <= used


def test_alert_metrics_exist(alerts, known):
    problems = {rule["alert"]: check_query(rule["expr"], known)
                for rule in alert_rules(alerts)}
    assert not any(problems.values()), problems


def dashboard_queries(dashboard):
    """``(where, query)`` of every panel target and template variable."""
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries.append(("panel %s %s" % (panel["id"], target["refId"]),
                            target["expr"]))
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            match = re.match(r"\Alabel_values\((\w+),\s*(\w+)\)\Z",
                             var["definition"])
            assert match, var["definition"]
            queries.append(("variable " + var["name"],
                            '%s{%s=""}' % match.groups()))
    return queries


def test_dashboard_metrics_exist(dashboard, known):
    problems = {where: check_query(query, known)
                for where, query in dashboard_queries(dashboard)}
    assert not any(problems.values()), problems


def test_dashboard_well_formed(dashboard):
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["uid"] and dashboard["title"]
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("provider", "label"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not mine & cells, "%s overlaps" % panel["title"]
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            for var in re.findall(r"\$(\w+)", target["expr"]):
                assert var in variables or var == "__rate_interval", var


def test_dashboard_covers_the_brief(dashboard):
    used = set()
    for _, query in dashboard_queries(dashboard):
        used |= parse_query(query)[0]
    assert {"nodepool_nodes", "nodepool_provider_nodes",
            "nodepool_launch_provider_ready_total",
            "nodepool_launch_provider_error_total",
            "nodepool_provider_api_rate",
            "nodepool_provider_capacity_cooldowns",
            "nodepool_provider_pool_addressable_requests",
            "nodepool_label_oldest_request_age_seconds",
            "nodepool_launcher_zk_connection_queue",
            "nodepool_launcher_zk_event_queue",
            "nodepool_launcher_zk_playback_queue"} <= used


# -- promtool, where installed ------------------------------------------------

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None,
                                    reason="promtool is not installed")


def promtool(*args):
    result = subprocess.run([PROMTOOL] + list(args), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@needs_promtool
def test_promtool_checks_alert_rules(alerts):
    assert "SUCCESS: %d rules found" % len(alert_rules(alerts)) in promtool(
        "check", "rules", os.path.join(ETC, "prometheus-alerts.yaml"))


@needs_promtool
def test_promtool_checks_dashboard_queries(dashboard, tmp_path):
    """Each query, with Grafana's variables filled in, as a recording rule
    (promtool parses rule expressions as Prometheus does)."""
    values = {"$__rate_interval": "5m", "$provider": ".*", "$label": ".*"}
    rules = []
    for number, (_, query) in enumerate(dashboard_queries(dashboard)):
        for var, value in values.items():
            query = query.replace(var, value)
        rules.append({"record": "dashboard:query%d" % number, "expr": query})
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(
        {"groups": [{"name": "dashboard", "rules": rules}]}))
    assert "SUCCESS: %d rules found" % len(rules) in promtool(
        "check", "rules", str(path))


def _series(values):
    return [{"series": name, "values": value} for name, value in values]


def _expect(alert, at, *label_sets):
    return {"eval_time": at, "alertname": alert,
            "exp_alerts": [{"exp_labels": labels} for labels in label_sets]}


# Made-up series (one sample a minute) and the alerts they must (and must
# not) raise.  "0+2x60" counts up by two a minute for an hour.
ALERT_CASES = [
    ([('nodepool_launch_provider_error_total{provider="p1",reason="quota"}',
       "0+2x60"),
      ('nodepool_launch_provider_ready_total{provider="p1"}', "0+1x60"),
      # Never a ready launch: no ready series at all.
      ('nodepool_launch_provider_error_total{provider="p2",'
       'reason="keyscan"}', "0+1x60"),
      ('nodepool_launch_provider_error_total{provider="p3",reason="quota"}',
       "0+1x60"),
      ('nodepool_launch_provider_ready_total{provider="p3"}', "0+10x60")],
     [_expect("NodepoolLaunchErrorRateHigh", "40m",
              {"severity": "warning", "provider": "p1"},
              {"severity": "warning", "provider": "p2"}),
      _expect("NodepoolLaunchErrorRateHigh", "10m")]),
    ([('nodepool_provider_leaked_total{provider="p1",kind="instances"}',
       "0 0 0 0 0 2 2 2 2 2 2 2 2 2 2 2"),
      ('nodepool_provider_leaked_total{provider="p1",kind="ports"}', "5x15")],
     [_expect("NodepoolLeakedResources", "10m",
              {"severity": "warning", "provider": "p1",
               "kind": "instances"})]),
    ([('nodepool_label_oldest_request_age_seconds{label="l1"}',
       "1500+60x30"),
      ('nodepool_label_oldest_request_age_seconds{label="l2"}', "60x30")],
     [_expect("NodepoolRequestWaitingLong", "15m",
              {"severity": "warning", "label": "l1"}),
      _expect("NodepoolRequestWaitingLong", "8m")]),
    ([('nodepool_provider_pool_addressable_requests{provider="p1",'
       'pool="main"}', "3x60"),
      ('nodepool_launch_provider_ready_total{provider="p1"}', "5x60"),
      ('nodepool_provider_pool_addressable_requests{provider="p2",'
       'pool="main"}', "3x60"),
      ('nodepool_launch_provider_ready_total{provider="p2"}', "0+1x60")],
     [_expect("NodepoolRequestsNotServed", "40m",
              {"severity": "warning", "provider": "p1", "pool": "main"}),
      _expect("NodepoolRequestsNotServed", "20m")]),
    ([('nodepool_provider_nodes{provider="p1",state="in-use"}', "5x60"),
      ('nodepool_provider_nodes{provider="p1",state="deleted"}', "50x60"),
      ('nodepool_provider_max_servers{provider="p1"}', "5x60"),
      ('nodepool_provider_pool_addressable_requests{provider="p1",'
       'pool="main"}', "2x60"),
      ('nodepool_provider_nodes{provider="p2",state="in-use"}', "3x60"),
      ('nodepool_provider_max_servers{provider="p2"}', "5x60"),
      ('nodepool_provider_pool_addressable_requests{provider="p2",'
       'pool="main"}', "2x60")],
     [_expect("NodepoolProviderFull", "40m",
              {"severity": "info", "provider": "p1"})]),
    ([('nodepool_launcher_zk_connection_queue{hostname="h1"}', "500x30"),
      ('nodepool_launcher_zk_connection_queue{hostname="h2"}', "5x30"),
      ('nodepool_launcher_zk_event_queue{hostname="h1",cache="node_cache"}',
       "200x30"),
      ('nodepool_launcher_zk_playback_queue{hostname="h1",'
       'cache="request_cache"}', "300x30"),
      ('nodepool_launcher_zk_event_queue{hostname="h2",cache="node_cache"}',
       "2x30")],
     [_expect("NodepoolZooKeeperSendQueue", "20m",
              {"severity": "warning", "hostname": "h1"}),
      _expect("NodepoolZooKeeperCacheBacklog", "20m",
              {"severity": "warning", "hostname": "h1",
               "cache": "node_cache"},
              {"severity": "warning", "hostname": "h1",
               "cache": "request_cache"}),
      _expect("NodepoolZooKeeperSendQueue", "5m")]),
    ([('up{job="nodepool-launcher",instance="l1:8005"}', "0x20"),
      ('up{job="nodepool-launcher",instance="l2:8005"}', "1x20")],
     [_expect("NodepoolLauncherDown", "10m",
              {"severity": "critical", "job": "nodepool-launcher",
               "instance": "l1:8005"})]),
]


@needs_promtool
def test_promtool_alerts_fire(alerts, tmp_path):
    """The alerts fire on the series they are for, and only on those.
    The annotations are left out of the copy under test (promtool compares
    them verbatim); ``check rules`` above parses their templates."""
    for rule in alert_rules(alerts):
        rule.pop("annotations")
    rules_path = tmp_path / "alerts.yaml"
    rules_path.write_text(yaml.safe_dump(alerts))
    tested = {case["alertname"] for _, cases in ALERT_CASES
              for case in cases}
    assert tested == {rule["alert"] for rule in alert_rules(alerts)}
    tests = [{"interval": "1m", "input_series": _series(series),
              "alert_rule_test": cases} for series, cases in ALERT_CASES]
    test_path = tmp_path / "alerts-test.yaml"
    test_path.write_text(yaml.safe_dump({
        "rule_files": [str(rules_path)], "evaluation_interval": "1m",
        "tests": tests}))
    assert "SUCCESS" in promtool("test", "rules", str(test_path))
