"""The Grafana dashboard and the metric names agree with what the exporter really serves.

- `gdro_ray.metrics.names` is well formed, covers the issue's metrics, and the committed
  `docs/metrics-prometheus.md` equals `render_markdown()`.
- Every dashboard panel has a title and a datasource, every query parses, and every metric
  name in every PromQL expression (panels and template variables) is one `exposed_names()`
  lists; the panels the issue asks for exist.
- The real `Exporter`, scraped over HTTP, serves every name the dashboard queries; and a real
  Prometheus (when installed) scraping it with `deploy/prometheus/prometheus-static.yml` answers
  every panel's query with data.
Metric names are pulled out of PromQL by a small tokenizer (strings, label matchers, ranges,
grouping clauses, functions, keywords, numbers and Grafana variables removed), itself tested.
"""
from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from _prom import HAVE_PROMETHEUS, prometheus

from gdro_ray.metrics import names
from gdro_ray.protocol import DriverReport

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "gdro-dashboard.json"

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
             "and", "or", "unless", "atan2", "inf", "nan", "start", "end"}
_TOKEN = re.compile(r"""
    (?P<str>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$\w+|\[\[\w+\]\])
  | (?P<num>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[a-zA-Z]*)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<open>[({\[])
  | (?P<close>[)}\]])
  | (?P<other>\S)
""", re.X)


def promql_metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (Grafana variables allowed)."""
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(expr)]
    found: set[str] = set()
    depth_brace = depth_bracket = 0
    grouping = 0  # >0 while inside by(...)/without(...)/on(...)/ignoring(...)/group_x(...)
    paren_stack: list[bool] = []  # True for a paren that opened a grouping label list
    for i, (kind, text) in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else (None, "")
        if kind == "open":
            if text == "{":
                depth_brace += 1
            elif text == "[":
                depth_bracket += 1
            else:
                prev = tokens[i - 1][1] if i else ""
                is_group = prev in ("by", "without", "on", "ignoring", "group_left", "group_right")
                paren_stack.append(is_group)
                grouping += is_group
        elif kind == "close":
            if text == "}":
                depth_brace -= 1
            elif text == "]":
                depth_bracket -= 1
            elif paren_stack:
                grouping -= paren_stack.pop()
        elif kind == "ident":
            if depth_brace:
                # {__name__="x"} selects by name; every other identifier here is a label.
                if text == "__name__":
                    op, value = tokens[i + 1][1], tokens[i + 2][1] if i + 2 < len(tokens) else ""
                    if op == "=" and tokens[i + 2][0] == "str":
                        found.add(value[1:-1])
                    else:
                        raise ValueError(f"cannot resolve __name__ matcher in {expr!r}")
                continue
            # A name followed by "(" is a function; by "by"/"without", an aggregation operator.
            if depth_bracket or grouping or text in _KEYWORDS or nxt[1] in ("(", "by", "without"):
                continue
            found.add(text)
    if depth_brace or depth_bracket or paren_stack:
        raise ValueError(f"unbalanced brackets in {expr!r}")
    return found


def grafana_query_names(query: str) -> set[str]:
    """Metric names of a Grafana Prometheus variable query (label_values(), query_result(), ...)."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*[a-zA-Z_]\w*\s*\)\s*", query)
    if m:
        return promql_metric_names(m.group(1))
    m = re.fullmatch(r"\s*(?:query_result|metrics)\((.*)\)\s*", query)
    return promql_metric_names(m.group(1) if m else query)


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dash: dict):
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])  # panels inside collapsed rows


# --- the parser --------------------------------------------------------------------

@pytest.mark.parametrize("expr, expected", [
    ('gdro_bin_weight{bin=~"$bin"}', {"gdro_bin_weight"}),
    ("max by (bin) (gdro_bin_share)", {"gdro_bin_share"}),
    ("sum(rate(gdro_rollouts_total[$__rate_interval])) / ignoring(job) group_left sum(gdro_step)",
     {"gdro_rollouts_total", "gdro_step"}),
    ('histogram_quantile(0.9, sum by (le, stage) (rate(x_seconds_bucket{a="b,c{"}[5m])))', {"x_seconds_bucket"}),
    ('{__name__="gdro_step", job="j"} offset 1h30m > bool 1e3', {"gdro_step"}),
    ("topk(3, a) and on (bin) b or c unless d", {"a", "b", "c", "d"}),
    ("rate(gdro_x_total[5m:1m]) * 0x1F + inf", {"gdro_x_total"}),
])
def test_parser_extracts_metric_names(expr, expected):
    assert promql_metric_names(expr) == expected


def test_parser_rejects_unbalanced_and_regex_names():
    with pytest.raises(ValueError):
        promql_metric_names("sum(gdro_step")
    with pytest.raises(ValueError):
        promql_metric_names('{__name__=~"gdro_.*"}')
    assert grafana_query_names("label_values(gdro_bin_weight{job=\"a\"}, bin)") == {"gdro_bin_weight"}


# --- the metric list ---------------------------------------------------------------

REQUIRED_PER_BIN = ["gdro_bin_weight", "gdro_bin_score", "gdro_bin_prompts", "gdro_bin_rollouts",
                    "gdro_bin_pass_at_k", "gdro_bin_variance", "gdro_bin_share", "gdro_bin_clip_fraction"]
REQUIRED_OTHER = ["gdro_step", "gdro_shadow_price", "gdro_rollouts_total", "gdro_weights_version",
                  "gdro_step_time_seconds", "gdro_stage_time_seconds", "gdro_tokens_per_second",
                  "gdro_reward_mean", "gdro_samplers_live", "gdro_queue_shards",
                  "gdro_shards_requeued_total", "gdro_sampler_restarts_total",
                  "gdro_reward_timeouts_total", "gdro_staleness"]


def test_metric_list_covers_the_issue():
    for name in REQUIRED_PER_BIN:
        assert names.BY_NAME[name].labels == ("bin",), name
    for name in REQUIRED_OTHER:
        assert name in names.BY_NAME, name
    assert names.BY_NAME["gdro_stage_time_seconds"].labels == ("stage",)
    assert set(names.STAGES) == {"schedule", "generate", "reward", "learn", "publish", "observe"}
    for m in names.METRICS:
        assert re.fullmatch(r"gdro_[a-z0-9_]+", m.name) and m.help.strip(), m
        assert (m.kind == "counter") == m.name.endswith("_total"), m


def test_metric_spec_rejects_bad_names():
    with pytest.raises(ValueError):
        names.MetricSpec("gdro_x", "counter", (), "counter without _total")
    with pytest.raises(ValueError):
        names.MetricSpec("x_total", "counter", (), "no prefix")
    assert names.MetricSpec("gdro_h", "histogram", (), "h").sample_names() == (
        "gdro_h_bucket", "gdro_h_sum", "gdro_h_count")


def test_metrics_doc_in_sync():
    doc = (ROOT / "docs" / "metrics-prometheus.md").read_text()
    assert doc == names.render_markdown(), "run: make docs"
    for m in names.METRICS:
        assert f"`{m.name}`" in doc


def test_adversary_sd_file_format():
    groups = json.loads(names.adversary_sd_targets("10.0.0.5", names.DEFAULT_CLUSTER_PORT, {"run": "r1"}))
    assert groups == [{"targets": ["10.0.0.5:9464"], "labels": {"component": "adversary", "run": "r1"}}]


# --- the dashboard -----------------------------------------------------------------

def test_every_panel_has_title_datasource_and_known_metrics():
    dash = _dashboard()
    exposed = names.exposed_names()
    ds_vars = {v["name"] for v in dash["templating"]["list"] if v["type"] == "datasource"}
    ids = [p["id"] for p in _panels(dash)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    queried = set()
    for p in _panels(dash):
        assert p.get("title", "").strip(), f"panel {p['id']} has no title"
        if p["type"] == "row":
            continue
        ds = p.get("datasource")
        assert ds and ds.get("type") == "prometheus", f"panel {p['title']!r}: no Prometheus datasource"
        assert ds["uid"].strip("${}") in ds_vars or not ds["uid"].startswith("$"), p["title"]
        assert p.get("targets"), f"panel {p['title']!r} has no queries"
        for t in p["targets"]:
            used = promql_metric_names(t["expr"])
            assert used, f"panel {p['title']!r}: query {t['expr']!r} selects no metric"
            unknown = used - exposed
            assert not unknown, f"panel {p['title']!r} queries unknown metrics {sorted(unknown)}"
            queried |= used
            if t.get("datasource"):
                assert t["datasource"] == ds
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            assert grafana_query_names(q) <= exposed, var["name"]
    assert {"gdro_bin_weight", "gdro_shadow_price"} <= queried


def _panels_querying(dash: dict, metric: str, ptype: str | None = None) -> list[dict]:
    return [p for p in _panels(dash) if p["type"] != "row" and (ptype is None or p["type"] == ptype)
            and any(metric in promql_metric_names(t["expr"]) for t in p["targets"])]


@pytest.mark.parametrize("metric, ptype", [
    ("gdro_bin_weight", "heatmap"),
    ("gdro_bin_share", "timeseries"),
    ("gdro_shadow_price", "timeseries"),
    ("gdro_bin_pass_at_k", "timeseries"),
    ("gdro_reward_mean", "timeseries"),
    ("gdro_tokens_per_second", "timeseries"),
    ("gdro_step_time_seconds", "timeseries"),
    ("gdro_samplers_live", None),
])
def test_dashboard_has_the_required_panels(metric, ptype):
    assert _panels_querying(_dashboard(), metric, ptype), f"no {ptype or ''} panel for {metric}"


def test_unknown_metric_in_a_panel_is_caught():
    dash = _dashboard()
    bad = json.loads(json.dumps(dash))
    bad["panels"][-1]["targets"][0]["expr"] = "sum(gdro_not_a_metric)"
    exposed = names.exposed_names()
    assert any(promql_metric_names(t["expr"]) - exposed for p in _panels(bad) if p["type"] != "row"
               for t in p["targets"])


def test_real_exporter_serves_every_dashboard_metric():
    exporter_mod = pytest.importorskip("gdro_ray.metrics.exporter")
    from prometheus_client.parser import text_string_to_metric_families

    exp = exporter_mod.Exporter(host="127.0.0.1", port=0)
    try:
        for m in names.METRICS:
            labels = {"bin": "0", "stage": names.STAGES[0], "group": "pooled", "rank": "0", "phase": "forward"}
            labels = {k: labels[k] for k in m.labels}
            if m.kind == "counter":
                exp.inc_to(m.name, 3, **labels)
            else:
                exp.set(m.name, 1.5, **labels)
        with urllib.request.urlopen(exp.address, timeout=5) as r:
            text = r.read().decode()
    finally:
        exp.close()
    scraped = {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}
    scraped_gdro = {n for n in scraped if n.startswith("gdro_") and not n.endswith("_created")}
    assert scraped_gdro == names.exposed_names()
    dash = _dashboard()
    queried = {n for p in _panels(dash) if p["type"] != "row" for t in p["targets"]
               for n in promql_metric_names(t["expr"])}
    assert queried and queried <= scraped


def test_exporter_shows_each_learner_ranks_phases_from_the_driver_report():
    exporter_mod = pytest.importorskip("gdro_ray.metrics.exporter")
    from prometheus_client.parser import text_string_to_metric_families

    exp = exporter_mod.Exporter(host="127.0.0.1", port=0)
    try:
        exp.update_driver(DriverReport(stages={"learn": 3.0}, learner_phases=[{"forward": 1.25, "backward": 2.5},
                                                                              {"forward": 1.5, "sync": 0.125}]))
        exp.update_driver(DriverReport(learner_phases=None))  # list-form or empty steps report none: nothing breaks
        with urllib.request.urlopen(exp.address, timeout=5) as r:
            text = r.read().decode()
    finally:
        exp.close()
    got = {(s.labels["rank"], s.labels["phase"]): s.value for fam in text_string_to_metric_families(text)
           for s in fam.samples if s.name == "gdro_learner_phase_seconds"}
    assert got == {("0", "forward"): 1.25, ("0", "backward"): 2.5, ("1", "forward"): 1.5, ("1", "sync"): 0.125}


def _grafana_to_promql(expr: str) -> str:
    """Substitute the dashboard's Grafana variables the way Grafana would before querying."""
    return expr.replace("$__rate_interval", "1m").replace("$bin", ".*")


@pytest.mark.slow  # starts a Prometheus server (about 7 s)
@pytest.mark.skipif(not HAVE_PROMETHEUS, reason="prometheus not installed (apt-get install prometheus)")
def test_dashboard_queries_return_data_from_a_real_prometheus(tmp_path):
    """Real Prometheus, scraping the real exporter with the static config: every query runs and has data."""
    exporter_mod = pytest.importorskip("gdro_ray.metrics.exporter")
    exp = exporter_mod.Exporter(host="127.0.0.1", port=0)
    try:
        for step, m in enumerate(names.METRICS):
            labels = {k: {"bin": "3", "stage": "learn", "group": "pooled", "rank": "0", "phase": "forward"}[k]
                      for k in m.labels}
            exp.inc_to(m.name, 5 + step, **labels) if m.kind == "counter" else exp.set(m.name, 0.25, **labels)
        with prometheus(tmp_path, [f"127.0.0.1:{exp.port}"]) as query:
            query.wait_for("gdro_step")  # ready, and two scrapes so rate()/increase() have points
            assert query('gdro_bin_weight{job="gdro_adversary"}')[0]["metric"]["bin"] == "3"
            dash = _dashboard()
            for p in _panels(dash):
                for t in p.get("targets", []):
                    assert query(_grafana_to_promql(t["expr"])), f"panel {p['title']!r}: {t['expr']!r} has no data"
            for var in dash["templating"]["list"]:
                if var["type"] == "query":  # label_values(m, l): the series of m must carry label l
                    m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["query"]["query"])
                    assert all(m[2] in s["metric"] for s in query(m[1])), var["name"]
    finally:
        exp.close()
