//! Chart conventions (issue 10), by rendering the chart with values and reading what it made:
//! global image registry and pull secrets, extra arguments and environment, overridable
//! security contexts (restricted by default), PodMonitor as an alternative to the
//! ServiceMonitor, namespace overrides, the API server ports of the operator's NetworkPolicy,
//! and the dual-stack listen address.

use serde_json::{Value, json};

use crate::support::*;

/// `helm template` of the chart with `--set` values, on an API server that serves
/// ValidatingAdmissionPolicy.
fn render(set: &[&str]) -> Vec<Value> {
    crate::support::render(set, &["--api-versions", VAP_API])
}

/// `helm template` that must fail; its error output.
fn refused(set: &[&str]) -> String {
    let mut cmd = helm(None);
    cmd.args(["template", "--kube-version", KUBE_VERSION, "onus", CHART]);
    for value in set {
        cmd.args(["--set", value]);
    }
    let (success, _, stderr) = run(&mut cmd);
    assert!(!success, "--set {set:?} was accepted");
    stderr
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

fn pod(docs: &[Value]) -> &Value {
    &find(docs, "Deployment")["spec"]["template"]["spec"]
}

fn container(docs: &[Value]) -> &Value {
    &pod(docs)["containers"][0]
}

fn args(docs: &[Value]) -> Vec<String> {
    container(docs)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

#[test]
fn chart_metadata_names_home_and_sources() {
    let chart: Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{CHART}/Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("yaml");
    assert!(
        chart["home"]
            .as_str()
            .is_some_and(|h| h.starts_with("https://"))
    );
    assert!(chart["sources"].as_array().is_some_and(|s| !s.is_empty()));
}

#[test]
fn defaults_are_restricted_and_listen_on_both_ip_families() {
    let docs = render(&[]);
    assert_eq!(container(&docs)["image"], "ghcr.io/onus-dev/onus:0.1.0");
    assert!(args(&docs).contains(&"--http-addr=[::]:8080".to_string()));
    assert_eq!(
        pod(&docs)["securityContext"],
        json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(
        container(&docs)["securityContext"],
        json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
               "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]},
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert!(pod(&docs).get("imagePullSecrets").is_none());
    assert!(!docs.iter().any(|d| d["kind"] == "PodMonitor"));
}

#[test]
fn the_global_registry_and_pull_secrets_apply() {
    let docs = render(&[
        "global.imageRegistry=mirror.example:5000/",
        "global.imagePullSecrets[0]=from-global",
        "imagePullSecrets[0].name=own",
        "imagePullSecrets[1].name=from-global",
    ]);
    assert_eq!(
        container(&docs)["image"],
        "mirror.example:5000/onus-dev/onus:0.1.0"
    );
    assert_eq!(
        pod(&docs)["imagePullSecrets"],
        json!([{"name": "from-global"}, {"name": "own"}])
    );
    // An empty registry leaves a full reference in image.repository as it is.
    let docs = render(&["image.registry=", "image.repository=registry.local/onus"]);
    assert_eq!(container(&docs)["image"], "registry.local/onus:0.1.0");
    let digest = format!("image.digest=sha256:{}", "a".repeat(64));
    let docs = render(&[&digest]);
    assert_eq!(
        container(&docs)["image"],
        format!("ghcr.io/onus-dev/onus@sha256:{}", "a".repeat(64))
    );
}

#[test]
fn extra_args_and_env_come_after_the_charts_own() {
    let docs = render(&[
        "extraArgs[0]=--policy-selector=team=a",
        "extraEnv[0].name=HTTPS_PROXY",
        "extraEnv[0].value=http://proxy:3128",
    ]);
    let args = args(&docs);
    assert_eq!(
        args.last().map(String::as_str),
        Some("--policy-selector=team=a")
    );
    assert!(args.iter().any(|a| a.starts_with("--leader-election-id=")));
    let env = container(&docs)["env"].as_array().expect("env");
    assert_eq!(env.len(), 4, "{env:?}");
    assert_eq!(env[0]["name"], "RUST_LOG");
    assert_eq!(
        env[3],
        json!({"name": "HTTPS_PROXY", "value": "http://proxy:3128"})
    );
    assert!(refused(&["extraEnv[0].value=x"]).contains("name"));
}

#[test]
fn security_contexts_can_be_overridden_for_platforms_that_assign_user_ids() {
    // OpenShift's restricted-v2 assigns the user and group: the chart must not pin them.
    let docs = render(&[
        "podSecurityContext.runAsUser=null",
        "podSecurityContext.runAsGroup=null",
        "securityContext.readOnlyRootFilesystem=false",
    ]);
    assert_eq!(
        pod(&docs)["securityContext"],
        json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}})
    );
    let container = &container(&docs)["securityContext"];
    assert_eq!(container["readOnlyRootFilesystem"], false);
    assert_eq!(container["allowPrivilegeEscalation"], false);
    assert_eq!(container["capabilities"], json!({"drop": ["ALL"]}));
}

#[test]
fn a_pod_monitor_is_the_alternative_to_the_service_monitor() {
    let docs = render(&[
        "podMonitor.enabled=true",
        "podMonitor.namespace=monitoring",
        "podMonitor.labels.release=prom",
    ]);
    let monitor = find(&docs, "PodMonitor");
    assert_eq!(monitor["metadata"]["namespace"], "monitoring");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        json!(["onus-system"])
    );
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "http");
    assert_eq!(endpoint["path"], "/metrics");
    let deployment = find(&docs, "Deployment");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector")
    {
        assert_eq!(
            &deployment["spec"]["template"]["metadata"]["labels"][key], value,
            "the PodMonitor does not select the operator's pods"
        );
    }
    assert!(!docs.iter().any(|d| d["kind"] == "ServiceMonitor"));
    // Both would scrape every instance twice (and sum(onus_leader) would read 2).
    let error = refused(&["podMonitor.enabled=true", "serviceMonitor.enabled=true"]);
    assert!(error.contains("enable one of them"), "{error}");
}

#[test]
fn namespace_overrides_move_every_namespaced_object() {
    let docs = render(&[
        "namespaceOverride=security",
        "serviceMonitor.enabled=true",
        "serviceMonitor.namespace=monitoring",
        "prometheusRule.enabled=true",
        "prometheusRule.namespace=rules",
    ]);
    let monitoring = ["ServiceMonitor", "PrometheusRule"];
    for doc in &docs {
        let kind = doc["kind"].as_str().unwrap_or_default();
        let namespace = &doc["metadata"]["namespace"];
        match kind {
            "ServiceMonitor" => assert_eq!(namespace, "monitoring"),
            "PrometheusRule" => assert_eq!(namespace, "rules"),
            _ if namespace.is_null() => {}
            _ => assert_eq!(namespace, "security", "{kind}"),
        }
        assert!(
            !monitoring.contains(&kind) || namespace != "security",
            "{kind} ignored its override"
        );
    }
    assert_eq!(
        find(&docs, "ServiceMonitor")["spec"]["namespaceSelector"]["matchNames"],
        json!(["security"])
    );
    assert!(args(&docs).contains(&"--leader-election-namespace=security".to_string()));
    // Bindings name the ServiceAccount where it is.
    for binding in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
    {
        assert_eq!(binding["subjects"][0]["namespace"], "security");
    }
    let rendered = serde_json::to_string(&docs).expect("json");
    assert!(rendered.contains("system:serviceaccount:security:onus"));
    assert!(
        !rendered.contains("onus-system"),
        "the release namespace leaked"
    );
}

#[test]
fn the_operators_network_policy_takes_the_api_server_ports() {
    let docs = render(&[
        "networkPolicy.apiServer.ports={8443}",
        "networkPolicy.apiServer.cidrs={192.0.2.10/32}",
    ]);
    let policy = docs
        .iter()
        .find(|d| d["kind"] == "NetworkPolicy")
        .expect("the operator's NetworkPolicy");
    let api_server = &policy["spec"]["egress"][0];
    assert_eq!(
        api_server["ports"],
        json!([{"port": 8443, "protocol": "TCP"}])
    );
    assert_eq!(
        api_server["to"],
        json!([{"ipBlock": {"cidr": "192.0.2.10/32"}}])
    );
    assert!(refused(&["networkPolicy.apiServer.ports={0}"]).contains("ports"));
}

#[test]
fn the_chart_refuses_a_kubernetes_older_than_it_supports() {
    let mut cmd = helm(None);
    cmd.args(["template", "--kube-version", "1.33.9", "onus", CHART]);
    let (success, _, stderr) = run(&mut cmd);
    assert!(!success, "rendered for Kubernetes 1.33");
    assert!(stderr.contains(">=1.34.0-0"), "{stderr}");
    let mut cmd = helm(None);
    cmd.args(["template", "--kube-version", "1.34.0", "onus", CHART]);
    assert!(run(&mut cmd).0, "1.34 is supported");
}
