//! The Grafana dashboard, checked at the level of its JSON: every panel reads the data source
//! variable, every query follows the cluster and job variables (and the policy variable where
//! the metric has a policy label), ids are unique, panels do not overlap, and the chart README
//! describes each panel.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::CHART;

const DATASOURCE: &str = "${datasource}";

fn dashboard() -> Value {
    let text = std::fs::read_to_string(format!("{CHART}/dashboards/onus.json")).expect("dashboard");
    serde_json::from_str(&text).expect("dashboard JSON")
}

fn panels(d: &Value) -> Vec<Value> {
    d["panels"].as_array().expect("panels").clone()
}

/// Metrics that carry a `policy` label, so a query on them must follow `$policy`.
fn has_policy_label(metric: &str) -> bool {
    metric.starts_with("onus_policy_")
        || metric.starts_with("onus_control_")
        || metric == "onus_exceptions_expiring_soon"
        || metric.starts_with("onus_reconcil")
        || metric.starts_with("onus_detection_latency")
}

/// Every `onus_*` metric selector in a query, with its label matchers (empty when bare).
fn selectors(expr: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("onus_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let metric = tail[..end].to_string();
        let after = &tail[end..];
        let matchers = after
            .strip_prefix('{')
            .and_then(|m| m.split_once('}'))
            .map(|(m, _)| m.to_string())
            .unwrap_or_default();
        out.push((metric, matchers));
        rest = &tail[end..];
    }
    out
}

#[test]
fn the_variables_are_datasource_cluster_job_and_policy() {
    let d = dashboard();
    let vars = d["templating"]["list"].as_array().expect("templating");
    let names: Vec<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(names, ["datasource", "cluster", "job", "policy"]);
    assert_eq!(vars[0]["type"], "datasource");
    assert_eq!(vars[0]["query"], "prometheus");
    for v in &vars[1..] {
        assert_eq!(v["datasource"]["uid"], DATASOURCE, "{}", v["name"]);
        assert_eq!(v["includeAll"], true, "{}", v["name"]);
        // `.*` also matches a series without the label: one cluster needs no cluster label.
        assert_eq!(v["allValue"], ".*", "{}", v["name"]);
    }
    let query = |i: usize| {
        vars[i]["query"]["query"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(query(2).contains(r#"cluster=~"$cluster""#), "{}", query(2));
    assert!(query(3).contains(r#"job=~"$job""#), "{}", query(3));
}

#[test]
fn every_panel_queries_through_the_variables() {
    let d = dashboard();
    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        let title = p["title"].as_str().expect("title").to_string();
        let id = p["id"].as_u64().unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "{title}: id {id} is not unique");
        assert_eq!(p["datasource"]["uid"], DATASOURCE, "{title}");
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{title}: no description"
        );
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert_eq!(t["datasource"]["uid"], DATASOURCE, "{title}");
            assert!(
                refs.insert(t["refId"].as_str().unwrap_or_default().to_string()),
                "{title}: refIds repeat"
            );
            let expr = t["expr"].as_str().expect("expr");
            let found = selectors(expr);
            assert!(!found.is_empty(), "{title}: no onus metric in {expr}");
            for (metric, matchers) in found {
                for wanted in [r#"cluster=~"$cluster""#, r#"job=~"$job""#] {
                    assert!(
                        matchers.contains(wanted),
                        "{title}: {metric} without {wanted}"
                    );
                }
                if has_policy_label(&metric) {
                    assert!(
                        matchers.contains(r#"policy=~"$policy""#),
                        "{title}: {metric} ignores $policy"
                    );
                }
            }
        }
    }
}

#[test]
fn panels_fit_the_grid_without_overlapping() {
    let d = dashboard();
    let boxes: Vec<(String, [u64; 4])> = panels(&d)
        .iter()
        .map(|p| {
            let g = &p["gridPos"];
            let n = |k: &str| g[k].as_u64().unwrap_or_else(|| panic!("gridPos.{k}"));
            (
                p["title"].as_str().unwrap_or_default().to_string(),
                [n("x"), n("y"), n("w"), n("h")],
            )
        })
        .collect();
    for (i, (a, [ax, ay, aw, ah])) in boxes.iter().enumerate() {
        assert!(ax + aw <= 24, "{a} is wider than the grid");
        for (b, [bx, by, bw, bh]) in &boxes[i + 1..] {
            let apart = ax + aw <= *bx || bx + bw <= *ax || ay + ah <= *by || by + bh <= *ay;
            assert!(apart, "{a} and {b} overlap");
        }
    }
}

#[test]
fn the_dashboard_has_the_panels_operators_need() {
    let d = dashboard();
    let by_title = |title: &str| {
        panels(&d)
            .into_iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title}"))
    };
    let matrix = by_title("Responsibility matrix");
    assert_eq!(matrix["type"], "table");
    let expr = matrix["targets"][0]["expr"].as_str().unwrap_or_default();
    for label in ["policy", "control", "owner", "result"] {
        assert!(
            expr.contains(label),
            "the matrix does not show {label}: {expr}"
        );
    }
    assert_eq!(
        by_title("Detection latency distribution")["type"],
        "heatmap"
    );
    for title in ["Violations over time", "Reconcile duration", "Leaders"] {
        by_title(title);
    }
}

#[test]
fn the_chart_readme_describes_every_panel() {
    let readme = std::fs::read_to_string(format!("{CHART}/README.md")).expect("README");
    for p in panels(&dashboard()) {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(
            readme.contains(&format!("**{title}**")),
            "charts/onus/README.md does not describe the panel {title}"
        );
    }
}
