//! `onus report` on a real API server, and the agreement of `onus check` with the controller:
//! the manifests of `tests/fixtures/check/agreement/` applied to the cluster give the same
//! verdicts in the policy's status as `onus check` gives on the files.

mod common;

use std::process::{Command, Output};

use common::{TestEnv, deployment, kubectl_ok};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use onus::crd::{ControlResult, ResponsibilityPolicyStatus};
use serde_json::{Value, json};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/check");

fn onus(env: &TestEnv, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onus"))
        .args(args)
        .env("KUBECONFIG", env.cp.kubeconfig_path())
        .current_dir(FIXTURES)
        .output()
        .expect("onus runs")
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success() || output.status.code() == Some(1),
        "{output:?}"
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Headless Chromium (Debian's package; `make tools` installs it), with the flags that keep it
/// off the network: the report must render from the file alone.
fn chromium(args: &[&str]) -> Output {
    let bin = std::env::var("ONUS_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let profile = std::env::temp_dir().join(format!("onus-chromium-{}", std::process::id()));
    let output = Command::new(&bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{bin}: {e} (make tools installs Debian's chromium)"));
    let _ = std::fs::remove_dir_all(&profile);
    assert!(output.status.success(), "{bin} {args:?}: {output:?}");
    output
}

/// The DOM a real browser builds from the HTML file.
fn rendered_dom(html: &std::path::Path) -> String {
    let url = format!("file://{}", html.display());
    String::from_utf8(chromium(&["--dump-dom", &url]).stdout).expect("UTF-8 DOM")
}

/// The HTML file printed to PDF by the browser.
fn printed(html: &std::path::Path) -> Vec<u8> {
    let pdf = html.with_extension("pdf");
    let url = format!("file://{}", html.display());
    chromium(&[
        &format!("--print-to-pdf={}", pdf.display()),
        "--no-pdf-header-footer",
        &url,
    ]);
    let bytes = std::fs::read(&pdf).expect("PDF written");
    let _ = std::fs::remove_file(&pdf);
    bytes
}

fn row<'a>(policy: &'a Value, id: &str) -> &'a Value {
    policy["controls"]
        .as_array()
        .expect("controls")
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_of_a_cluster_names_it_and_lists_every_offender() {
    let env = TestEnv::start("report").await;
    let ns = env.namespace("rep", &[]).await;
    // More privileged Deployments than status keeps as examples.
    for i in 0..12 {
        env.create(
            Some(&ns),
            deployment(
                &format!("web-{i:02}"),
                json!({"privileged": true}),
                json!({}),
            ),
        )
        .await;
    }
    let policy = env
        .apply_policy(
            "prod",
            json!({
                "serviceModel": "PaaS",
                "responsibilities": [
                    {"control": "NET-04", "owner": "Provider", "reason": "the provider runs the CNI"}
                ],
                "exceptions": [
                    {"controls": ["DAT-01"], "reason": "old", "expires": "2020-01-01T00:00:00Z"},
                    {"controls": ["NET-05"], "reason": "edge", "expires": "2099-01-01T00:00:00Z"}
                ]
            }),
        )
        .await;
    let rp = env
        .wait_status(&policy, "12 privileged Deployments", |s| {
            common::is(s, "WKL-03", ControlResult::Fail, 12)
        })
        .await;
    let status: &ResponsibilityPolicyStatus = rp.status.as_ref().expect("status");
    assert_eq!(common::control(status, "WKL-03").examples.len(), 10);

    let document = json_of(&onus(&env, &["report", &policy, "--format", "json"]));
    assert_eq!(document["source"], "cluster");
    let cluster = &document["cluster"];
    assert_eq!(
        cluster["server"].as_str().unwrap().trim_end_matches('/'),
        env.cp.server().trim_end_matches('/')
    );
    assert!(cluster["version"].as_str().unwrap().starts_with("v1."));
    let kube_system = Api::<Namespace>::all(env.client.clone())
        .get("kube-system")
        .await
        .expect("kube-system");
    assert_eq!(
        cluster["kubeSystemUid"],
        kube_system.metadata.uid.expect("uid")
    );
    let policies = document["policies"].as_array().expect("policies");
    assert_eq!(policies.len(), 1, "POLICY selects one");
    let p = &policies[0];
    assert_eq!(p["name"], policy);
    assert_eq!(p["serviceModel"], "PaaS");
    // Every offender, not status's ten.
    let wkl03 = row(p, "WKL-03");
    assert_eq!(wkl03["result"], "Fail");
    assert_eq!(wkl03["violations"], 12);
    assert_eq!(wkl03["offendersComplete"], true);
    let offenders: Vec<&str> = wkl03["offenders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["object"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..12)
        .map(|i| format!("Deployment/{ns}/web-{i:02}"))
        .collect();
    assert_eq!(offenders, expected);
    assert!(
        wkl03["frameworks"]
            .as_array()
            .unwrap()
            .contains(&json!("CIS 5.2.2"))
    );
    let net04 = row(p, "NET-04");
    assert_eq!(net04["owner"], "Provider");
    assert_eq!(net04["ownerSource"], "Override");
    assert_eq!(net04["ownerReason"], "the provider runs the CNI");
    let exceptions = p["exceptions"].as_array().expect("exceptions");
    assert_eq!(exceptions[0]["valid"], false, "expired in 2020");
    assert_eq!(exceptions[1]["valid"], true);
    assert_eq!(exceptions[1]["expires"], "2099-01-01T00:00:00Z");
    assert_eq!(p["compliant"], false);

    // The HTML matrix has one failing cell per failing control and namespace of the JSON.
    let html_path = std::env::temp_dir().join(format!("onus-report-{}.html", env.id));
    let html_file = html_path.to_str().expect("UTF-8");
    let written = onus(
        &env,
        &["report", &policy, "--format", "html", "-o", html_file],
    );
    assert!(written.status.success(), "{written:?}");
    let html = std::fs::read_to_string(&html_path).expect("report written");
    let dom = rendered_dom(&html_path);
    let pdf = printed(&html_path);
    let _ = std::fs::remove_file(&html_path);
    let failing_cells: usize = p["controls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["result"] == "Fail")
        .map(|c| {
            let mut namespaces: Vec<Option<&str>> = c["offenders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["namespace"].as_str())
                .collect();
            namespaces.sort();
            namespaces.dedup();
            namespaces.len()
        })
        .sum();
    assert!(failing_cells > 0);
    assert_eq!(html.matches("class=\"cell-fail\"").count(), failing_cells);
    assert!(html.contains(&format!(
        "<span id=\"cluster-id\">{}</span>",
        cluster["kubeSystemUid"].as_str().unwrap()
    )));
    assert!(!html.contains("<script") && !html.contains("src=\"http"));
    // As a real browser parses it: the same failing cells (a cell the parser had to move out
    // of a broken table would not be counted in place), the same cluster id, and a PDF when
    // printed.
    assert_eq!(
        dom.matches("<td class=\"cell-fail\"").count(),
        failing_cells,
        "{dom}"
    );
    assert!(dom.contains(cluster["kubeSystemUid"].as_str().unwrap()));
    assert!(dom.contains("<title>onus responsibility report</title>"));
    assert!(
        pdf.starts_with(b"%PDF-") && pdf.len() > 1000,
        "{} bytes",
        pdf.len()
    );

    // Offline, from exported status: the examples only, and the report says so.
    let exported = env
        .cp
        .kubectl()
        .args(["get", "responsibilitypolicies", &policy, "-o", "json"])
        .output()
        .expect("kubectl");
    assert!(exported.status.success());
    let file = std::env::temp_dir().join(format!("onus-report-{}.json", env.id));
    std::fs::write(&file, &exported.stdout).expect("write");
    let offline = json_of(&onus(
        &env,
        &[
            "report",
            "--from",
            file.to_str().unwrap(),
            "--format",
            "json",
        ],
    ));
    let _ = std::fs::remove_file(&file);
    assert_eq!(offline["source"], "status");
    assert!(offline.get("cluster").is_none());
    let wkl03 = row(&offline["policies"][0], "WKL-03");
    assert_eq!(wkl03["violations"], 12);
    assert_eq!(wkl03["offenders"].as_array().unwrap().len(), 10);
    assert_eq!(wkl03["offendersComplete"], false);

    // Markdown: the matrix row and the identity.
    let md = onus(&env, &["report", &policy]);
    let md = String::from_utf8_lossy(&md.stdout);
    assert!(
        md.contains(
            "| WKL-03 | No privileged containers | Customer | ServiceModel | Audit | Fail | detected | 12 |"
        ),
        "{md}"
    );
    assert!(
        md.contains("- Cluster id (kube-system namespace UID): "),
        "{md}"
    );
    // A policy that does not exist: exit 2.
    assert_eq!(
        onus(&env, &["report", "no-such-policy"]).status.code(),
        Some(2)
    );
}

/// (id, result, violations, sorted offenders) of status.
fn status_verdicts(status: &ResponsibilityPolicyStatus) -> Vec<(String, String, u64, Vec<String>)> {
    status
        .controls
        .iter()
        .map(|c| {
            let mut examples = c.examples.clone();
            examples.sort();
            (
                c.id.clone(),
                format!("{:?}", c.result),
                c.violations,
                examples,
            )
        })
        .collect()
}

/// The same of `onus check --output json`.
fn check_verdicts(report: &Value) -> Vec<(String, String, u64, Vec<String>)> {
    report["controls"]
        .as_array()
        .expect("controls")
        .iter()
        .map(|c| {
            let mut offenders: Vec<String> = c["offenders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["object"].as_str().unwrap().to_string())
                .collect();
            offenders.sort();
            (
                c["id"].as_str().unwrap().to_string(),
                c["result"].as_str().unwrap().to_string(),
                c["violations"].as_u64().unwrap(),
                offenders,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_and_check_agree_on_the_same_manifests() {
    let env = TestEnv::start("agree").await;
    let dir = format!("{FIXTURES}/agreement");
    kubectl_ok(env.cp, &["apply", "-f", &format!("{dir}/namespaces.yaml")]);
    kubectl_ok(env.cp, &["apply", "-f", &format!("{dir}/workloads.yaml")]);
    let text =
        std::fs::read_to_string(format!("{FIXTURES}/agreement-policy.yaml")).expect("policy");
    let spec = serde_yaml::from_str::<Value>(&text).expect("YAML")["spec"].clone();
    let policy = env.apply_policy("agreement", spec).await;

    let minor = {
        let info = env.client.apiserver_version().await.expect("version");
        onus::podsecurity::server_minor(&info).expect("1.x")
    };
    let check = json_of(&onus(
        &env,
        &[
            "check",
            "-f",
            "agreement",
            "--policy",
            "agreement-policy.yaml",
            "--kube-version",
            &format!("v1.{minor}"),
            "-o",
            "json",
        ],
    ));
    let expected = check_verdicts(&check);
    assert!(
        expected.iter().filter(|v| v.1 == "Fail").count() >= 10,
        "the fixture fails many controls: {expected:?}"
    );
    // The controller sees the objects as they arrive: wait until its status has settled on
    // check's verdicts; a difference that stays is the failure shown.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let api = Api::<onus::crd::ResponsibilityPolicy>::all(env.client.clone());
    loop {
        let rp = api.get(&policy).await.expect("policy");
        let got = rp.status.as_ref().map(status_verdicts).unwrap_or_default();
        if got == expected {
            break;
        }
        if std::time::Instant::now() > deadline {
            let differ: Vec<_> = got
                .iter()
                .zip(&expected)
                .filter(|(g, e)| g != e)
                .map(|(g, e)| format!("controller {g:?}\n     check {e:?}"))
                .collect();
            panic!(
                "status and onus check disagree after 30s:\n{}",
                if differ.is_empty() {
                    format!("{got:?}\nvs\n{expected:?}")
                } else {
                    differ.join("\n")
                }
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    kubectl_ok(
        env.cp,
        &[
            "delete",
            "--wait=false",
            "-f",
            &format!("{dir}/namespaces.yaml"),
        ],
    );
}

/// `kubectl onus ...`: the onus binary on PATH as `kubectl-onus` is a kubectl plugin that runs
/// `check` and `report` exactly as `onus` does, takes kubectl's `--kubeconfig`/`--context`, and
/// never starts the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_runs_check_and_report_as_its_onus_plugin() {
    let env = TestEnv::start("plugin").await;
    let ns = env.namespace("plug", &[]).await;
    env.create(
        Some(&ns),
        deployment("web", json!({"privileged": true}), json!({})),
    )
    .await;
    let policy = env
        .apply_policy("plug", json!({"serviceModel": "PaaS"}))
        .await;
    env.wait_status(&policy, "the privileged Deployment", |s| {
        common::is(s, "WKL-03", ControlResult::Fail, 1)
    })
    .await;

    let plugins = std::env::temp_dir().join(format!("onus-plugin-{}", env.id));
    std::fs::create_dir_all(&plugins).expect("plugin directory");
    let link = plugins.join("kubectl-onus");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_onus"), &link).expect("symlink");
    let path = format!(
        "{}:{}",
        plugins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = |args: &[&str]| {
        let mut command = env.cp.kubectl();
        command
            .args(args)
            .env("PATH", &path)
            .env_remove("KUBECONFIG")
            .current_dir(FIXTURES)
            .output()
            .expect("kubectl runs")
    };

    let listed = kubectl(&["plugin", "list"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("kubectl-onus"),
        "{listed:?}"
    );

    // check: the same report and exit code as `onus check` on the same files.
    let by_plugin = kubectl(&["onus", "check", "-f", "cluster", "-o", "json"]);
    let direct = Command::new(env!("CARGO_BIN_EXE_onus"))
        .args(["check", "-f", "cluster", "-o", "json"])
        .current_dir(FIXTURES)
        .output()
        .expect("onus runs");
    assert_eq!(
        by_plugin.status.code(),
        Some(1),
        "violations: {by_plugin:?}"
    );
    assert_eq!(by_plugin.status.code(), direct.status.code());
    assert_eq!(json_of(&by_plugin), json_of(&direct));

    // report: with kubectl's flags (KUBECONFIG is unset for the plugin), the same document as
    // `onus report` with KUBECONFIG, but for the time it was generated.
    let kubeconfig = env.cp.kubeconfig_path().to_str().expect("utf-8 path");
    let context = String::from_utf8(
        kubectl(&["config", "current-context", "--kubeconfig", kubeconfig]).stdout,
    )
    .expect("utf-8");
    let mut by_plugin = json_of(&kubectl(&[
        "onus",
        "report",
        &policy,
        "--format",
        "json",
        "--kubeconfig",
        kubeconfig,
        "--context",
        context.trim(),
    ]));
    let mut direct = json_of(&onus(&env, &["report", &policy, "--format", "json"]));
    for document in [&mut by_plugin, &mut direct] {
        document
            .as_object_mut()
            .expect("object")
            .remove("generatedAt");
    }
    assert_eq!(by_plugin["policies"][0]["name"], policy.as_str());
    assert_eq!(by_plugin, direct);
    let unknown = kubectl(&[
        "onus",
        "report",
        "--kubeconfig",
        kubeconfig,
        "--context",
        "nope",
    ]);
    assert_eq!(unknown.status.code(), Some(2), "{unknown:?}");

    // Anything else: usage and exit code 2, and no operator (it would serve /metrics and
    // watch the cluster with the user's credentials).
    let bare = kubectl(&["onus", "--kubeconfig", kubeconfig]);
    assert_eq!(bare.status.code(), Some(2), "{bare:?}");
    let stderr = String::from_utf8_lossy(&bare.stderr);
    assert!(stderr.contains("expected check or report"), "{stderr}");
    assert!(!stderr.contains("Serving /metrics"), "{stderr}");
    let version = kubectl(&["onus", "--version"]);
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("onus "),
        "{version:?}"
    );
    let _ = std::fs::remove_dir_all(&plugins);
}
