"""Checks the Grafana dashboard deploy/grafana/fanin.json.

Every query must be PromQL that promtool accepts, over metrics fanin exposes:
the series server/metrics.cc defines (read from that file, with their labels)
or the cluster series named below (agreed names; metrics.cc has all but
fanin_cluster_routed_requests_total so far, and where it has one, its labels
win). Every label a query groups by, matches or prints in its legend must
be one those series carry (or a scrape target's job/instance, or a
histogram's le). The layout must hold together: unique panel ids, panels
inside the 24-column grid and not on top of each other, every query on the
dashboard's Prometheus variable, every variable it uses defined, and a row
repeated per node.

Usage: dashboard_test.py DASHBOARD_JSON METRICS_CC PROMTOOL
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

DASHBOARD = None
METRICS_CC = None
PROMTOOL = None

# The cluster series, with their labels, as agreed with server/cluster.
CLUSTER_METRICS = {
    "fanin_cluster_published_events_total": set(),
    "fanin_cluster_publish_batches_total": set(),
    "fanin_cluster_publish_conflicts_total": set(),
    "fanin_cluster_buffer_bytes": set(),
    "fanin_cluster_broker_connected": set(),
    "fanin_cluster_nodes": {"state"},
    "fanin_cluster_routed_requests_total": {"method", "code"},
    "fanin_cluster_consumed_events_total": set(),
    "fanin_cluster_lag_events": set(),
}
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every series
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range"}


def exposed_metrics():
    """{series name: labels} from server/metrics.cc, histograms with their
    _bucket (plus le), _sum and _count series."""
    with open(METRICS_CC, encoding="utf-8") as f:
        source = f.read()
    families = re.findall(r'(?:Family|Single)\(\s*&out,\s*"(fanin_\w+)",.*?MetricType::(\w+)',
                          source, re.S)
    variables = dict(re.findall(r'MetricFamily&\s+(\w+)\s*=\s*Family\(\s*&out,\s*"(fanin_\w+)"',
                                source))
    labels = {name: set() for name, _ in families}
    # Every label of every Sample(&family, value, {{"a", ..}, {"b", ..}}) call.
    for variable, args in re.findall(r'Sample\(\s*&(\w+),([^;]*?)\);', source, re.S):
        for label in re.findall(r'\{"(\w+)",', args):
            labels[variables[variable]].add(label)
    series = {}
    for name, kind in families:
        if kind == "Histogram":
            series[name + "_bucket"] = labels[name] | {"le"}
            series[name + "_sum"] = labels[name]
            series[name + "_count"] = labels[name]
        else:
            series[name] = labels[name]
    return series


def all_panels(dashboard):
    for panel in dashboard["panels"]:
        yield panel
        for inner in panel.get("panels", []):  # a collapsed row keeps its own
            yield inner


def queries(dashboard):
    """(panel title, target) for every query of every panel."""
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target


def metric_names(expr):
    return set(re.findall(r"\b(fanin_[a-z0-9_]+)\b", expr))


def labels_used(expr, legend=""):
    used = set()
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        used |= {l.strip() for l in group.split(",") if l.strip()}
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        used |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
    used |= set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    return used


def as_promql(expr):
    """A Grafana query as plain PromQL: its variables given example values."""
    expr = re.sub(r"\$\{?__(rate_)?interval\}?", "1m", expr)
    expr = re.sub(r"\$\{?__range\}?", "1h", expr)
    return re.sub(r"\$\{?\w+\}?", ".+", expr)


class DashboardTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(DASHBOARD, encoding="utf-8") as f:
            cls.dashboard = json.load(f)
        cls.series = exposed_metrics()
        cls.variables = {v["name"]: v for v in cls.dashboard["templating"]["list"]}

    def test_metrics_cc_was_read(self):
        # Guards the parsing above: a few series every fanin has.
        for name in ("fanin_events_total", "fanin_connections_open",
                     "fanin_event_delivery_latency_seconds_bucket"):
            self.assertIn(name, self.series)
        self.assertEqual(self.series["fanin_events_total"], {"kind"})
        self.assertEqual(self.series["fanin_connections_rejected_total"], {"reason"})

    def test_agreed_cluster_series_match_metrics_cc(self):
        for name, labels in CLUSTER_METRICS.items():
            if name in self.series:
                self.assertEqual(self.series[name], labels, name)
        self.assertIn("fanin_cluster_nodes", self.series)  # the parsing reaches them

    def test_every_query_is_on_a_series_fanin_exposes(self):
        known = dict(CLUSTER_METRICS, **self.series)
        for title, target in queries(self.dashboard):
            names = metric_names(target["expr"])
            self.assertTrue(names, "%s: %s queries no fanin series" % (title, target["expr"]))
            for name in names:
                self.assertIn(name, known, "%s: %s is not a series fanin exposes" % (title, name))

    def test_every_label_is_one_the_series_carry(self):
        known = dict(CLUSTER_METRICS, **self.series)
        for title, target in queries(self.dashboard):
            allowed = set(TARGET_LABELS)
            for name in metric_names(target["expr"]):
                allowed |= known.get(name, set())
            used = labels_used(target["expr"], target.get("legendFormat", ""))
            self.assertLessEqual(used, allowed, "%s: %s" % (title, target["expr"]))

    def test_promtool_accepts_every_query(self):
        exprs = [as_promql(t["expr"]) for _, t in queries(self.dashboard)]
        for variable in self.variables.values():
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", variable.get("definition", ""))
            if m:
                exprs.append(as_promql(m.group(1)))
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": "dashboard:query%d" % i, "expr": e} for i, e in enumerate(exprs)]}]}
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            json.dump(rules, f)  # JSON is YAML
        self.addCleanup(os.unlink, f.name)
        out = subprocess.run([PROMTOOL, "check", "rules", f.name],
                             capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("%d rules found" % len(exprs), out.stdout + out.stderr)

    def test_the_brief_is_covered(self):
        used = set()
        for _, target in queries(self.dashboard):
            used |= metric_names(target["expr"])
        for name in ("fanin_events_total", "fanin_bytes_received_total",
                     "fanin_bytes_sent_total", "fanin_connections_open",
                     "fanin_subscriber_streams", "fanin_events_lost_total",
                     "fanin_subscriber_events_lost_total",
                     "fanin_event_delivery_latency_seconds_bucket"):
            self.assertIn(name, used)
        self.assertLessEqual(set(CLUSTER_METRICS), used)
        quantiles = [t["expr"] for _, t in queries(self.dashboard)
                     if t["expr"].startswith("histogram_quantile(")]
        self.assertTrue(quantiles)
        for expr in quantiles:  # over buckets summed by le, or it is wrong
            self.assertRegex(expr, r"sum by \(le\) \(rate\(fanin_\w+_bucket")

    def test_variables(self):
        self.assertEqual(self.variables["datasource"]["type"], "datasource")
        self.assertEqual(self.variables["datasource"]["query"], "prometheus")
        node = self.variables["instance"]
        self.assertTrue(node["multi"] and node["includeAll"])
        defined = set(self.variables) | GRAFANA_BUILTINS
        texts = [t["expr"] for _, t in queries(self.dashboard)]
        texts += [v.get("definition", "") for v in self.variables.values()]
        texts += [p["title"] for p in all_panels(self.dashboard)]
        for text in texts:
            for name in re.findall(r"\$\{?(\w+)\}?", text):
                self.assertIn(name, defined, text)
        repeated = [p for p in self.dashboard["panels"] if p.get("repeat")]
        self.assertEqual([p["repeat"] for p in repeated], ["instance"])
        self.assertEqual(repeated[0]["type"], "row")

    def test_every_query_uses_the_datasource_variable(self):
        for panel in all_panels(self.dashboard):
            if panel["type"] == "row":
                continue
            self.assertEqual(panel["datasource"]["uid"], "${datasource}", panel["title"])
            for target in panel["targets"]:
                self.assertEqual(target["datasource"]["uid"], "${datasource}", panel["title"])

    def test_layout(self):
        self.assertTrue(self.dashboard["uid"] and self.dashboard["title"])
        ids = [p["id"] for p in all_panels(self.dashboard)]
        self.assertEqual(len(ids), len(set(ids)))
        boxes = []
        for panel in self.dashboard["panels"]:
            g = panel["gridPos"]
            self.assertGreater(g["w"], 0)
            self.assertLessEqual(g["x"] + g["w"], 24, panel["title"])
            for other, b in boxes:
                overlap = (g["x"] < b["x"] + b["w"] and b["x"] < g["x"] + g["w"] and
                           g["y"] < b["y"] + b["h"] and b["y"] < g["y"] + g["h"])
                self.assertFalse(overlap, "%s overlaps %s" % (panel["title"], other))
            boxes.append((panel["title"], g))
            if panel["type"] != "row":
                self.assertTrue(panel.get("description"), panel["title"])


if __name__ == "__main__":
    DASHBOARD, METRICS_CC, PROMTOOL = sys.argv[1:4]
    unittest.main(argv=sys.argv[:1], verbosity=2)
