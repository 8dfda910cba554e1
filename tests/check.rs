//! `onus check` as a CI pipeline runs it: the built binary on the fixtures under
//! `tests/fixtures/check/`, its exit code and what it names. No API server is involved.

use std::{
    io::Write,
    process::{Command, Output, Stdio},
};

use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/check");

fn onus_check(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_onus"))
        .arg("check")
        .args(args)
        .current_dir(FIXTURES)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("onus runs");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .expect("stdin written");
    drop(input);
    child.wait_with_output().expect("onus exits")
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn control<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["controls"]
        .as_array()
        .expect("controls")
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no {id}"))
}

/// (object, "file:line") of a control's offenders.
fn offenders(report: &Value, id: &str) -> Vec<(String, String)> {
    control(report, id)["offenders"]
        .as_array()
        .expect("offenders")
        .iter()
        .map(|o| {
            let at = &o["location"];
            let at = if at["file"].is_string() {
                at
            } else {
                &at["impliedBy"]
            };
            (
                o["object"].as_str().unwrap_or_default().to_string(),
                format!("{}:{}", at["file"].as_str().unwrap_or("?"), at["line"]),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn a_directory_with_violations_exits_1_and_names_each_offender_with_file_and_line() {
    let output = onus_check(&["-f", "cluster", "--output", "json"], None);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report = json_of(&output);
    assert_eq!(report["policy"]["source"], "default");
    assert_eq!(report["exitCode"], 1);
    assert_eq!(report["input"]["evaluated"], 9);
    assert_eq!(report["input"]["skipped"]["ConfigMap"], 1);
    assert_eq!(report["input"]["skipped"]["Widget (example.com/v1)"], 1);
    assert_eq!(control(&report, "WKL-03")["result"], "Fail");
    assert_eq!(
        offenders(&report, "WKL-03"),
        pairs(&[("Deployment/shop/web", "cluster/web.yaml:2")])
    );
    // A List's items have their own lines; an object without a namespace is in default.
    assert_eq!(
        offenders(&report, "WKL-02"),
        pairs(&[("Pod/default/debug", "cluster/list.json:11")])
    );
    assert_eq!(
        offenders(&report, "NET-05"),
        pairs(&[("Service/shop/edge", "cluster/list.json:5")])
    );
    assert_eq!(
        offenders(&report, "IAM-01"),
        pairs(&[(
            "ClusterRoleBinding/ops-admin: User/alice",
            "cluster/rbac/admins.yml:1"
        )])
    );
    assert_eq!(
        offenders(&report, "DAT-01"),
        pairs(&[("CronJob/shop/report", "cluster/web.yaml:20")])
    );
    // The default namespace has no Namespace object: it is shown where it is first used.
    assert_eq!(
        offenders(&report, "WKL-01"),
        pairs(&[("Namespace/default", "cluster/list.json:11")])
    );
    // shop meets restricted: its namespace-wide controls pass there.
    assert_eq!(
        offenders(&report, "NET-01"),
        pairs(&[("Namespace/default", "cluster/list.json:11")])
    );
    assert_eq!(control(&report, "NET-04")["result"], "NotObservable");
}

#[test]
fn the_table_names_the_default_policy_and_the_verdict() {
    let output = onus_check(&["-f", "cluster"], None);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(
            "policy: built-in default (no --policy): serviceModel PaaS, Pod Security restricted"
        ),
        "{text}"
    );
    assert!(
        text.contains("    Deployment/shop/web  (cluster/web.yaml:2)"),
        "{text}"
    );
    assert!(text.contains("FAIL: "), "{text}");
    assert!(text.trim_end().ends_with("(exit 1)"), "{text}");
}

#[test]
fn a_binding_to_an_aggregated_cluster_role_is_judged_on_the_rules_it_aggregates() {
    let output = onus_check(&["-f", "aggregated", "-o", "json"], None);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report = json_of(&output);
    // widget-operator has no rules of its own: the wildcard comes from widget-operator-all,
    // which its selectors pick; admin holds what is aggregated into view (through edit).
    assert_eq!(control(&report, "IAM-02")["result"], "Fail");
    assert_eq!(
        offenders(&report, "IAM-02"),
        pairs(&[
            (
                "RoleBinding/shop/devs-admin: Group/devs",
                "aggregated/rbac.yaml:65"
            ),
            (
                "RoleBinding/shop/widget-operator: ServiceAccount/shop/widget-operator",
                "aggregated/rbac.yaml:39"
            ),
        ])
    );
    // Each aggregated ClusterRole of the input is named with what its rules came from: a
    // cluster may hold more roles with matching labels.
    let notes = report["input"]["aggregatedClusterRoles"]
        .as_array()
        .expect("aggregatedClusterRoles");
    let summary: Vec<(String, String, Value)> = notes
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or_default().to_string(),
                format!("{}:{}", n["file"].as_str().unwrap_or("?"), n["line"]),
                n["selected"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "widget-operator".to_string(),
                "aggregated/rbac.yaml:3".to_string(),
                serde_json::json!(["widget-operator-all", "widget-operator-read"])
            ),
            (
                "reporting".to_string(),
                "aggregated/rbac.yaml:80".to_string(),
                serde_json::json!([])
            ),
        ]
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "onus check: note: ClusterRole/reporting (aggregated/rbac.yaml:80) aggregates no \
             ClusterRole of the input"
        ),
        "{stderr}"
    );
    let table = onus_check(&["-f", "aggregated"], None);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains(
            "note: ClusterRole/widget-operator (aggregated/rbac.yaml:3) aggregates \
             ClusterRole/widget-operator-all, ClusterRole/widget-operator-read: judged with \
             their rules"
        ),
        "{text}"
    );
    let sarif = json_of(&onus_check(&["-f", "aggregated", "-o", "sarif"], None));
    assert_sarif_shape(&sarif);
    let notifications = sarif["runs"][0]["invocations"][0]["toolExecutionNotifications"]
        .as_array()
        .expect("notifications");
    assert_eq!(notifications.len(), 2);
    assert!(notifications.iter().all(|n| n["level"] == "note"));
    assert_eq!(
        sarif["runs"][0]["invocations"][0]["executionSuccessful"],
        true
    );
}

#[test]
fn compliant_manifests_exit_0() {
    let output = onus_check(&["-f", "compliant/shop.yaml"], None);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains("PASS: every customer-owned control passes")
    );
}

#[test]
fn bad_yaml_exits_2_with_file_and_line_and_the_other_files_are_still_evaluated() {
    let output = onus_check(&["-f", "broken", "-o", "json"], None);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let report = json_of(&output);
    let errors = report["input"]["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["file"], "broken/bad.yaml");
    assert_eq!(errors[0]["line"], 17);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broken/bad.yaml:17: "), "{stderr}");
    let table = onus_check(&["-f", "broken"], None);
    assert_eq!(table.status.code(), Some(2));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("INCOMPLETE: 1 input errors"), "{text}");
    // shop.yaml and the good document of bad.yaml were read and judged.
    assert_eq!(report["input"]["evaluated"], 4);
    assert_eq!(report["input"]["skipped"]["ConfigMap"], 2);
    assert_eq!(control(&report, "WKL-01")["result"], "Pass");
    assert_eq!(report["summary"]["compliant"], false);
}

#[test]
fn stdin_is_read_with_a_policy_file() {
    let manifests =
        std::fs::read_to_string(format!("{FIXTURES}/cluster/web.yaml")).expect("fixture");
    let output = onus_check(
        &["-f", "-", "--policy", "policy.yaml", "-o", "json"],
        Some(&manifests),
    );
    let report = json_of(&output);
    assert_eq!(report["policy"]["source"]["file"], "policy.yaml");
    // Baseline: the privileged container still fails, the restricted-only checks do not.
    assert_eq!(
        offenders(&report, "WKL-03"),
        pairs(&[("Deployment/shop/web", "<stdin>:2")])
    );
    assert_eq!(control(&report, "WKL-07")["result"], "Pass");
    // The policy's exception covers the CronJob's Secret in env.
    assert_eq!(control(&report, "DAT-01")["result"], "Excepted");
    assert_eq!(control(&report, "DAT-01")["excepted"], 1);
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn a_bad_policy_or_command_line_exits_2() {
    let dir = std::env::temp_dir().join(format!("onus-check-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let policy = dir.join("typo.yaml");
    std::fs::write(
        &policy,
        "serviceModel: PaaS\ncontrols: {podSecurity: {levle: baseline}}\n",
    )
    .expect("write");
    let output = onus_check(
        &[
            "-f",
            "compliant",
            "--policy",
            policy.to_str().expect("utf-8"),
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("unknown field spec.controls.podSecurity.levle")
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(onus_check(&[], None).status.code(), Some(2));
    assert_eq!(
        onus_check(&["-f", "cluster", "-o", "xml"], None)
            .status
            .code(),
        Some(2)
    );
    let missing = onus_check(&["-f", "no-such-file.yaml"], None);
    assert_eq!(missing.status.code(), Some(2));
}

fn object<'a>(value: &'a Value, path: &str) -> &'a serde_json::Map<String, Value> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("{path} is not an object: {value}"))
}

/// The fields SARIF 2.1.0's schema requires (and the types it gives them) on the parts onus
/// writes: sarifLog, run, tool, toolComponent, reportingDescriptor, result, message, location,
/// artifactLocation, region, invocation, notification.
fn assert_sarif_shape(log: &Value) {
    let top = object(log, "sarifLog");
    assert_eq!(top["version"], "2.1.0");
    let runs = top["runs"].as_array().expect("runs is an array");
    assert_eq!(runs.len(), 1);
    let run = object(&runs[0], "run");
    let driver = object(&object(&run["tool"], "tool")["driver"], "driver");
    assert!(driver["name"].is_string());
    let rules = driver["rules"].as_array().expect("rules");
    let message = |m: &Value, at: &str| {
        assert!(object(m, at)["text"].is_string(), "{at}.text");
    };
    for rule in rules {
        let rule = object(rule, "rule");
        assert!(rule["id"].is_string());
        message(&rule["shortDescription"], "shortDescription");
        message(&rule["fullDescription"], "fullDescription");
        message(&rule["help"], "help");
        assert!(
            ["none", "note", "warning", "error"].contains(
                &rule["defaultConfiguration"]["level"]
                    .as_str()
                    .unwrap_or("?")
            )
        );
        let tags = rule["properties"]["tags"].as_array().expect("tags");
        assert!(tags.iter().all(Value::is_string));
    }
    let region_ok = |loc: &Value| {
        let physical = object(&loc["physicalLocation"], "physicalLocation");
        assert!(object(&physical["artifactLocation"], "artifactLocation")["uri"].is_string());
        if let Some(region) = physical.get("region") {
            assert!(region["startLine"].as_u64().expect("startLine") >= 1);
        }
    };
    for result in run["results"].as_array().expect("results") {
        let result = object(result, "result");
        message(&result["message"], "result.message");
        let id = result["ruleId"].as_str().expect("ruleId");
        let index = result["ruleIndex"].as_u64().expect("ruleIndex") as usize;
        assert_eq!(rules[index]["id"], id, "ruleIndex points at the rule");
        assert!(["none", "note", "warning", "error"].contains(&result["level"].as_str().unwrap()));
        for loc in result["locations"].as_array().expect("locations") {
            region_ok(loc);
        }
    }
    for invocation in run["invocations"].as_array().expect("invocations") {
        let invocation = object(invocation, "invocation");
        assert!(invocation["executionSuccessful"].is_boolean());
        for n in invocation["toolExecutionNotifications"]
            .as_array()
            .expect("notifications")
        {
            message(&n["message"], "notification.message");
            for loc in n["locations"].as_array().expect("locations") {
                region_ok(loc);
            }
        }
    }
}

#[test]
fn sarif_has_one_rule_per_control_and_a_located_result_per_offender() {
    let json = json_of(&onus_check(&["-f", "cluster", "-o", "json"], None));
    let output = onus_check(&["-f", "cluster", "-o", "sarif"], None);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let log = json_of(&output);
    assert_sarif_shape(&log);
    let run = &log["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().expect("rules");
    let controls = json["controls"].as_array().expect("controls");
    assert_eq!(rules.len(), controls.len());
    let wkl03 = rules.iter().find(|r| r["id"] == "WKL-03").expect("WKL-03");
    assert!(
        wkl03["help"]["text"]
            .as_str()
            .unwrap()
            .contains("Frameworks: CIS 5.2.2")
    );
    assert!(
        wkl03["properties"]["tags"]
            .as_array()
            .unwrap()
            .contains(&Value::from("CIS 5.2.2"))
    );
    // Every offender of every failing control is an error at its file and line.
    let results = run["results"].as_array().expect("results");
    let errors: Vec<(String, String)> = results
        .iter()
        .filter(|r| r["level"] == "error")
        .map(|r| {
            let at = &r["locations"][0]["physicalLocation"];
            (
                r["ruleId"].as_str().unwrap().to_string(),
                format!(
                    "{}:{}",
                    at["artifactLocation"]["uri"].as_str().unwrap_or("?"),
                    at["region"]["startLine"]
                ),
            )
        })
        .collect();
    let mut expected = Vec::new();
    for c in controls.iter().filter(|c| c["result"] == "Fail") {
        let id = c["id"].as_str().unwrap();
        for (_, at) in offenders(&json, id) {
            expected.push((id.to_string(), at));
        }
    }
    assert!(!expected.is_empty());
    assert_eq!(errors, expected);
    assert!(errors.contains(&("WKL-03".into(), "cluster/web.yaml:2".into())));
    // Bad input: a notification with file and line, and the run says it did not succeed.
    let broken = json_of(&onus_check(&["-f", "broken", "-o", "sarif"], None));
    assert_sarif_shape(&broken);
    let invocation = &broken["runs"][0]["invocations"][0];
    assert_eq!(invocation["executionSuccessful"], false);
    let note = &invocation["toolExecutionNotifications"][0]["locations"][0]["physicalLocation"];
    assert_eq!(note["artifactLocation"]["uri"], "broken/bad.yaml");
    assert_eq!(note["region"]["startLine"], 17);
}

/// The elements of an XML document, checked to nest properly: (name, attributes text).
fn xml_elements(text: &str) -> Vec<(String, String)> {
    let body = text
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
        .expect("XML declaration");
    let mut open: Vec<String> = Vec::new();
    let mut elements = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("tag closes") + start;
        let tag = &rest[start + 1..end];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(open.pop().as_deref(), Some(name), "nesting");
        } else {
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let (name, attributes) = tag.split_once(' ').unwrap_or((tag, ""));
            assert_eq!(attributes.matches('"').count() % 2, 0, "quotes in {tag}");
            elements.push((name.to_string(), attributes.to_string()));
            if !self_closing {
                open.push(name.to_string());
            }
        }
        assert!(!rest[..start].contains(['<', '>']));
        rest = &rest[end + 1..];
    }
    assert!(open.is_empty(), "unclosed {open:?}");
    elements
}

fn attribute<'a>(attributes: &'a str, name: &str) -> Option<&'a str> {
    // ` name="` (with the space) so that `classname` is not taken for `name`.
    let spaced = format!(" {attributes}");
    let key = format!(" {name}=\"");
    let at = spaced.find(&key)? + key.len() - 1;
    Some(&attributes[at..at + attributes[at..].find('"')?])
}

#[test]
fn junit_has_a_test_case_per_control_and_offending_object() {
    let json = json_of(&onus_check(&["-f", "cluster", "-o", "json"], None));
    let output = onus_check(&["-f", "cluster", "-o", "junit"], None);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let elements = xml_elements(&text);
    let cases: Vec<&str> = elements
        .iter()
        .filter(|(n, _)| n == "testcase")
        .map(|(_, a)| a.as_str())
        .collect();
    let controls = json["controls"].as_array().expect("controls");
    let expected_cases: usize = controls
        .iter()
        .map(|c| c["offenders"].as_array().unwrap().len().max(1))
        .sum();
    assert_eq!(cases.len(), expected_cases);
    let failures = elements.iter().filter(|(n, _)| n == "failure").count();
    let failing_offenders: usize = controls
        .iter()
        .filter(|c| c["result"] == "Fail")
        .map(|c| c["offenders"].as_array().unwrap().len())
        .sum();
    assert_eq!(failures, failing_offenders);
    let (_, root) = &elements[0];
    assert_eq!(attribute(root, "tests"), Some(&*expected_cases.to_string()));
    assert_eq!(
        attribute(root, "failures"),
        Some(&*failing_offenders.to_string())
    );
    let web = cases
        .iter()
        .find(|a| attribute(a, "name") == Some("WKL-03 Deployment/shop/web"))
        .expect("the privileged Deployment's case");
    assert_eq!(attribute(web, "file"), Some("cluster/web.yaml"));
    assert_eq!(attribute(web, "line"), Some("2"));
    // Input errors fail their own suite.
    let broken = onus_check(&["-f", "broken", "-o", "junit"], None);
    assert_eq!(broken.status.code(), Some(2));
    let text = String::from_utf8(broken.stdout).expect("UTF-8");
    let elements = xml_elements(&text);
    assert!(elements.iter().any(|(n, a)| n == "testcase"
        && attribute(a, "file") == Some("broken/bad.yaml")
        && attribute(a, "line") == Some("17")));
}

#[test]
fn kube_version_sets_what_latest_means_and_a_bad_one_exits_2() {
    let at = |version: Option<&str>| {
        let mut args = vec!["-f", "cluster", "-o", "json"];
        if let Some(v) = version {
            args.extend(["--kube-version", v]);
        }
        json_of(&onus_check(&args, None))
    };
    assert_eq!(at(None)["podSecurityVersion"], "latest");
    assert_eq!(at(Some("v1.24"))["podSecurityVersion"], "v1.24");
    // `runAsUser: 0` fails restricted from v1.23 on: the same Pod passes WKL-07 when the
    // cluster is v1.22, and fails at the newest version.
    let pod = "apiVersion: v1
kind: Pod
metadata: {name: root, namespace: shop}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 0, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: app
      image: app
      securityContext:
        allowPrivilegeEscalation: false
        capabilities: {drop: [ALL]}
";
    let wkl07 = |version: &[&str]| {
        let mut args = vec!["-f", "-", "-o", "json"];
        args.extend(version);
        control(&json_of(&onus_check(&args, Some(pod))), "WKL-07")["result"].clone()
    };
    assert_eq!(wkl07(&[]), "Fail");
    assert_eq!(wkl07(&["--kube-version", "v1.23"]), "Fail");
    assert_eq!(wkl07(&["--kube-version", "v1.22"]), "Pass");
    for bad in ["latest", "v1", "1.x", "v2.0"] {
        let output = onus_check(&["-f", "cluster", "--kube-version", bad], None);
        assert_eq!(output.status.code(), Some(2), "{bad}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("--kube-version"));
    }
}
