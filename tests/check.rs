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
        onus_check(&["-f", "cluster", "-o", "sarif"], None)
            .status
            .code(),
        Some(2)
    );
    let missing = onus_check(&["-f", "no-such-file.yaml"], None);
    assert_eq!(missing.status.code(), Some(2));
}
