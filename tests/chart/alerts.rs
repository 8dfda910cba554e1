//! The PrometheusRule: rendered with helm and run through `promtool test rules` on synthetic
//! series (tests/chart/alerts/*.test.yaml), and every alert has a test, a severity and a
//! runbook in docs/runbooks/.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use crate::support::{CHART, KUBE_VERSION, helm, ok, run, yaml_documents};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/chart/alerts");
const RUNBOOKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/runbooks");
const RUNBOOK_BASE: &str = "https://runbooks.test/onus";

/// promtool from `ONUS_PROMTOOL_BIN`, or as hack/build-promtool.sh caches it (building it
/// there if missing: `make tools` does so up front).
fn promtool() -> PathBuf {
    let dir = match std::env::var_os("ONUS_PROMTOOL_BIN") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let out = ok(Command::new("bash").arg(format!("{ROOT}/hack/build-promtool.sh")));
            let dir = out
                .lines()
                .find_map(|l| l.strip_prefix("ONUS_PROMTOOL_BIN="))
                .unwrap_or_else(|| panic!("build-promtool.sh printed no bin dir:\n{out}"));
            PathBuf::from(dir)
        }
    };
    let bin = dir.join("promtool");
    assert!(bin.is_file(), "{} not found", bin.display());
    bin
}

/// The PrometheusRule's `spec` rendered with `prometheusRule.enabled=true` and `set`.
fn rendered_rules(set: &[&str]) -> Value {
    let mut cmd = helm(None);
    cmd.args([
        "template",
        "--kube-version",
        KUBE_VERSION,
        "onus",
        CHART,
        "--show-only",
        "templates/prometheusrule.yaml",
        "--set",
        "prometheusRule.enabled=true",
    ]);
    for s in set {
        cmd.args(["--set", s]);
    }
    let docs = yaml_documents(&ok(&mut cmd));
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    rule["spec"].clone()
}

fn alerts(spec: &Value) -> Vec<Value> {
    spec["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Writes the rules where the test file expects them (a scratch dir under target/) and runs
/// promtool's check and unit tests; panics with promtool's output on a failure.
fn promtool_test(spec: &Value, rules_file: &str, test_file: &str) {
    let dir = Path::new(ROOT).join("target/chart-alerts").join(test_file);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let rules = dir.join(rules_file);
    std::fs::write(&rules, serde_yaml::to_string(spec).expect("yaml")).expect("rules file");
    let test = dir.join(test_file);
    std::fs::copy(Path::new(TESTS).join(test_file), &test).expect("test file");

    let promtool = promtool();
    let (success, stdout, stderr) =
        run(Command::new(&promtool).args(["check", "rules"]).arg(&rules));
    assert!(
        success,
        "promtool check rules {}:\n{stdout}{stderr}",
        rules.display()
    );
    let (success, stdout, stderr) = run(Command::new(&promtool).args(["test", "rules"]).arg(&test));
    assert!(
        success,
        "promtool test rules {test_file}:\n{stdout}{stderr}"
    );
}

/// Alert names a promtool test file exercises.
fn tested_alerts(test_file: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(Path::new(TESTS).join(test_file)).expect("test file");
    let doc: Value = serde_yaml::from_str(&text).expect("test YAML");
    doc["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["alertname"].as_str().map(String::from))
        .collect()
}

#[test]
fn every_alert_passes_its_promtool_tests() {
    let spec = rendered_rules(&[&format!("prometheusRule.runbookBaseUrl={RUNBOOK_BASE}/")]);
    promtool_test(&spec, "rules.yaml", "rules.test.yaml");
}

#[test]
fn alerts_grouped_by_cluster_fire_per_cluster() {
    let spec = rendered_rules(&["prometheusRule.clusterLabel=cluster"]);
    promtool_test(&spec, "rules-by-cluster.yaml", "rules-by-cluster.test.yaml");
}

#[test]
fn every_alert_is_tested_has_a_severity_and_a_runbook() {
    let spec = rendered_rules(&[&format!("prometheusRule.runbookBaseUrl={RUNBOOK_BASE}")]);
    let tested = tested_alerts("rules.test.yaml");
    let index = std::fs::read_to_string(Path::new(RUNBOOKS).join("README.md")).expect("index");
    let mut names = BTreeSet::new();
    for alert in alerts(&spec) {
        let name = alert["alert"].as_str().expect("alert name").to_string();
        assert!(tested.contains(&name), "{name} has no promtool test");
        let severity = alert["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        assert_eq!(
            alert["annotations"]["runbook_url"],
            format!("{RUNBOOK_BASE}/{name}.md"),
            "{name}"
        );
        assert!(
            Path::new(RUNBOOKS).join(format!("{name}.md")).is_file(),
            "docs/runbooks/{name}.md missing"
        );
        assert!(
            index.contains(&format!("| {name} | {severity} |")),
            "docs/runbooks/README.md does not list {name} as {severity}"
        );
        assert!(alert["for"].is_string(), "{name} has no `for`");
        names.insert(name);
    }
    for entry in std::fs::read_dir(RUNBOOKS).expect("runbooks") {
        let file = entry.expect("entry").file_name();
        let file = file.to_string_lossy();
        let Some(alert) = file.strip_suffix(".md") else {
            continue;
        };
        assert!(
            alert == "README" || names.contains(alert),
            "docs/runbooks/{file} belongs to no alert"
        );
    }
}

#[test]
fn severities_and_durations_come_from_values() {
    let spec = rendered_rules(&[
        "prometheusRule.severity.nonCompliant=warning",
        "prometheusRule.for.nonCompliant=2h",
    ]);
    let alert = alerts(&spec)
        .into_iter()
        .find(|a| a["alert"] == "OnusPolicyNonCompliant")
        .expect("OnusPolicyNonCompliant");
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(alert["for"], "2h");
    // The former single `severity` string is refused, not silently ignored.
    let (success, _, stderr) = run(helm(None).args([
        "template",
        "--kube-version",
        KUBE_VERSION,
        "onus",
        CHART,
        "--set",
        "prometheusRule.enabled=true,prometheusRule.severity=warning",
    ]));
    assert!(!success, "a string severity was accepted");
    assert!(stderr.contains("/prometheusRule/severity"), "{stderr}");
}
