//! The default-deny gate and the directions of `defaultDeny`, on the real API server: onus holds
//! `onus-default-deny` in namespaces that back an admission webhook, a CRD conversion webhook or
//! an aggregated APIService, and in its own namespace; a deny applied before a namespace backs
//! a webhook stays, with a warning; `defaultDeny` decides NET-01/NET-02 and policyTypes.
//!
//! The webhook and APIService never run (no Service behind them): the webhook fails open
//! (`failurePolicy: Ignore`) and matches only a resource no test creates; the APIService is
//! deleted at the end of its test (an unavailable one slows discovery).
//!
//! Like tests/enforce.rs, one test at a time: each operator releases what its policies do not
//! want.

mod common;

use common::enforce::{as_root, deny_policy, until};
use common::{TestEnv, control, deployment, is};
use onus::{
    crd::{ControlResult::*, ResponsibilityPolicyStatus},
    status::{self, DEFAULT_DENY_IN_FRONT_OF_BACKENDS, ENFORCED, RESPONSIBILITY_GAP},
};
use serde_json::{Value, json};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Network only, in Enforce mode, with these network settings.
fn network_spec(network: Value) -> Value {
    json!({"serviceModel": "PaaS", "mode": "Enforce",
           "controls": {"network": network, "podSecurity": {"enabled": false},
                        "serviceAccounts": {"enabled": false}}})
}

/// A ValidatingWebhookConfiguration calling Service `ns/hook`: it fails open and matches only
/// a resource of a group that does not exist.
fn webhook(name: &str, ns: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "check.gate.onus.example.com",
            "clientConfig": {"service": {"namespace": ns, "name": "hook", "path": "/validate"}},
            "rules": [{"apiGroups": ["gate.onus.example.com"], "apiVersions": ["v1"],
                       "operations": ["CREATE"], "resources": ["widgets"]}],
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        }]
    })
}

fn waiting(s: &ResponsibilityPolicyStatus) -> Vec<String> {
    s.remediation
        .as_ref()
        .map(|r| r.network_policy_waiting.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn namespaces_behind_a_webhook_an_api_service_or_onus_itself_get_no_default_deny() {
    let _serial = SERIAL.lock().await;
    let own = format!("onus-own-{}", &onus_testenv::random_suffix()[..6]);
    let env = TestEnv::start_in("gate", &own).await;
    env.create(
        None,
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": own, "labels": {"onus.dev/test-ns": env.id}}}),
    )
    .await;
    let plain = env.namespace("plain", &[]).await;
    let hooked = env.namespace("hooked", &[]).await;
    let aggregated = env.namespace("aggregated", &[]).await;
    let converted = env.namespace("converted", &[]).await;

    let hook = format!("{}-hook", env.id);
    env.create(None, webhook(&hook, &hooked)).await;
    let group = format!("{}.gate.onus.example.com", env.id);
    let api_service = format!("v1.{group}");
    env.create(
        None,
        json!({
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": api_service},
            "spec": {"group": group, "version": "v1",
                     "service": {"namespace": aggregated, "name": "api", "port": 443},
                     "insecureSkipTLSVerify": true,
                     "groupPriorityMinimum": 1000, "versionPriority": 15}
        }),
    )
    .await;
    let crd_group = format!("{}.crd.onus.example.com", env.id);
    let crd = format!("widgets.{crd_group}");
    env.create(
        None,
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": crd},
            "spec": {
                "group": crd_group, "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                              "schema": {"openAPIV3Schema": {"type": "object"}}}],
                "conversion": {"strategy": "Webhook", "webhook": {
                    "conversionReviewVersions": ["v1"],
                    "clientConfig": {"service": {"namespace": converted, "name": "convert"}}}}
            }
        }),
    )
    .await;

    let policy = env.apply_policy("net", network_spec(json!({}))).await;
    let expected = {
        let mut e = vec![
            format!("NetworkPolicy waits in {aggregated}: backs APIService {api_service}"),
            format!("NetworkPolicy waits in {converted}: backs conversion webhook of CRD {crd}"),
            format!("NetworkPolicy waits in {hooked}: backs webhook {hook}"),
            format!("NetworkPolicy waits in {own}: onus runs there"),
        ];
        e.sort();
        e
    };
    // The plain namespace's deny is applied in the same convergence: the status counts it once
    // the watch has delivered it (an evaluation may come first), so wait for that too.
    let rp = env
        .wait_status(&policy, "held in four namespaces", |s| {
            let mut w = waiting(s);
            w.sort();
            w == expected && is(s, "NET-01", Fail, 4)
        })
        .await;
    let s = rp.status.expect("status");
    let enforced = status::condition(&s, ENFORCED).expect("Enforced");
    assert_eq!(
        (enforced.status.as_str(), enforced.reason.as_str()),
        ("False", "EnforceWaiting"),
        "{}",
        enforced.message
    );
    assert!(
        enforced
            .message
            .contains("allowDefaultDenyInFrontOfWebhooks"),
        "{}",
        enforced.message
    );
    // The violations stay visible: held is not compliant (the four held, not the plain one).
    assert!(is(&s, "NET-01", Fail, 4), "{:?}", control(&s, "NET-01"));
    until("the plain namespace denied", async || {
        deny_policy(&env.client, &plain).await.is_some()
    })
    .await;
    for ns in [&hooked, &aggregated, &converted, &own] {
        assert!(
            deny_policy(&env.client, ns).await.is_none(),
            "default-deny in {ns}"
        );
    }

    // Listing a namespace lets the deny in; onus's own namespace never.
    env.apply_policy(
        "net",
        network_spec(json!({"allowDefaultDenyInFrontOfWebhooks": [hooked, own]})),
    )
    .await;
    until("the listed namespace denied", async || {
        deny_policy(&env.client, &hooked).await.is_some()
    })
    .await;
    let rp = env
        .wait_status(&policy, "three held", |s| waiting(s).len() == 3)
        .await;
    let w = waiting(&rp.status.expect("status"));
    assert!(
        w.contains(&format!("NetworkPolicy waits in {own}: onus runs there")),
        "{w:?}"
    );
    assert!(deny_policy(&env.client, &own).await.is_none());

    // The APIService goes: its namespace is released from the hold.
    env.delete(
        None,
        "apiregistration.k8s.io/v1",
        "APIService",
        &api_service,
    )
    .await;
    until("the APIService's namespace denied", async || {
        deny_policy(&env.client, &aggregated).await.is_some()
    })
    .await;
    env.delete(
        None,
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        &hook,
    )
    .await;
    env.delete(
        None,
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        &crd,
    )
    .await;
}

#[tokio::test]
async fn a_deny_applied_before_its_namespace_backs_a_webhook_stays_with_a_warning() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("kept").await;
    let ns = env.namespace("later", &[]).await;
    let policy = env.apply_policy("net", network_spec(json!({}))).await;
    env.wait_status(&policy, "remediated", |s| {
        status::condition(s, ENFORCED).is_some_and(|c| c.status == "True")
            && status::condition(s, DEFAULT_DENY_IN_FRONT_OF_BACKENDS)
                .is_some_and(|c| c.status == "False")
    })
    .await;
    assert!(deny_policy(&env.client, &ns).await.is_some());

    let hook = format!("{}-hook", env.id);
    env.create(None, webhook(&hook, &ns)).await;
    let rp = env
        .wait_status(&policy, "warning", |s| {
            status::condition(s, DEFAULT_DENY_IN_FRONT_OF_BACKENDS)
                .is_some_and(|c| c.status == "True")
        })
        .await;
    let s = rp.status.expect("status");
    let warning = status::condition(&s, DEFAULT_DENY_IN_FRONT_OF_BACKENDS).expect("condition");
    assert!(
        warning.message.starts_with(&format!(
            "onus-default-deny in {ns} stays in front of webhook {hook}"
        )),
        "{}",
        warning.message
    );
    // Kept: onus does not remove a protection by itself.
    assert!(deny_policy(&env.client, &ns).await.is_some());
    assert_eq!(
        status::condition(&s, ENFORCED).map(|c| c.status.as_str()),
        Some("True")
    );

    // Tightening it (egress too) waits, what is there stays.
    env.apply_policy(
        "net",
        network_spec(json!({"defaultDeny": ["Ingress", "Egress"]})),
    )
    .await;
    env.wait_status(&policy, "egress held", |s| {
        waiting(s) == [format!("NetworkPolicy waits in {ns}: backs webhook {hook}")]
    })
    .await;
    let np = deny_policy(&env.client, &ns).await.expect("kept");
    assert_eq!(
        np.spec.and_then(|s| s.policy_types),
        Some(vec!["Ingress".to_string()])
    );

    env.delete(
        None,
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        &hook,
    )
    .await;
    env.wait_status(&policy, "no warning", |s| {
        status::condition(s, DEFAULT_DENY_IN_FRONT_OF_BACKENDS).is_some_and(|c| c.status == "False")
            && status::condition(s, ENFORCED).is_some_and(|c| c.status == "True")
    })
    .await;
    let np = deny_policy(&env.client, &ns).await.expect("tightened");
    assert_eq!(
        np.spec.and_then(|s| s.policy_types),
        Some(vec!["Ingress".to_string(), "Egress".to_string()])
    );
}

#[tokio::test]
async fn default_deny_checks_and_denies_exactly_the_listed_directions() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("directions").await;
    let ns = env.namespace("dirs", &[]).await;
    let policy = env
        .apply_policy("net", network_spec(json!({"defaultDeny": ["Egress"]})))
        .await;
    let rp = env
        .wait_status(&policy, "egress only", |s| {
            status::condition(s, ENFORCED).is_some_and(|c| c.status == "True")
                && is(s, "NET-02", Pass, 0)
        })
        .await;
    let s = rp.status.expect("status");
    assert_eq!(control(&s, "NET-01").result, Disabled);
    let gap = status::condition(&s, RESPONSIBILITY_GAP).expect("gap");
    assert_eq!(gap.status, "True");
    assert!(
        gap.message
            .contains("NET-01 is not checked (spec.controls.network.defaultDeny lacks Ingress)"),
        "{}",
        gap.message
    );
    let np = deny_policy(&env.client, &ns).await.expect("egress deny");
    assert_eq!(
        np.spec.and_then(|s| s.policy_types),
        Some(vec!["Egress".to_string()])
    );

    env.apply_policy("net", network_spec(json!({"defaultDeny": ["Ingress"]})))
        .await;
    let rp = env
        .wait_status(&policy, "ingress only", |s| {
            status::condition(s, ENFORCED).is_some_and(|c| c.status == "True")
                && is(s, "NET-01", Pass, 0)
        })
        .await;
    let s = rp.status.expect("status");
    assert_eq!(control(&s, "NET-02").result, Disabled);
    // Other gaps remain (this policy switches families off), none for NET-01.
    let gap = status::condition(&s, RESPONSIBILITY_GAP).expect("gap");
    assert!(!gap.message.contains("NET-01"), "{}", gap.message);
    let np = deny_policy(&env.client, &ns).await.expect("ingress deny");
    assert_eq!(
        np.spec.and_then(|s| s.policy_types),
        Some(vec!["Ingress".to_string()])
    );
}

#[tokio::test]
async fn a_waiting_enforce_label_names_the_exception_that_holds_it() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("excepted").await;
    let ns = env.namespace("legacy", &[]).await;
    env.create(Some(&ns), deployment("rootapp", as_root(), json!({})))
        .await;
    let policy = env
        .apply_policy(
            "psa",
            json!({"serviceModel": "PaaS", "mode": "Enforce",
                   "controls": {"network": {"enabled": false}, "serviceAccounts": {"enabled": false},
                                "podSecurity": {"level": "restricted"}},
                   "exceptions": [{"controls": ["WKL-07"], "namespaces": [ns],
                                   "resources": [{"kind": "Deployment", "name": "rootapp"}],
                                   "reason": "vendor image runs as root"}]}),
        )
        .await;
    let rp = env
        .wait_status(&policy, "waiting", |s| {
            status::condition(s, ENFORCED).is_some_and(|c| c.reason == "EnforceWaiting")
        })
        .await;
    let s = rp.status.expect("status");
    let waiting = &s.remediation.expect("remediation").enforce_waiting;
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert!(
        waiting[0].starts_with(&format!(
            "enforce=baseline in {ns}; restricted waits for 1 workload (Deployment/{ns}/rootapp); \
             spec.exceptions[0] (WKL-07) covers Deployment/{ns}/rootapp"
        )),
        "{}",
        waiting[0]
    );
    assert!(waiting[0].contains("forceEnforce"), "{}", waiting[0]);
}

/// A ClusterRole for `user` with every verb on `groups`, bound to it; returns its name.
async fn grant(env: &TestEnv, suffix: &str, user: &str, groups: &[&str]) -> String {
    let name = format!("{}-{suffix}", env.id);
    env.create(
        None,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [{"apiGroups": groups, "resources": ["*"], "verbs": ["*"]}]
        }),
    )
    .await;
    env.create(
        None,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
        }),
    )
    .await;
    name
}

#[tokio::test]
async fn without_rights_to_read_webhooks_every_default_deny_is_held_until_it_has_them() {
    let _serial = SERIAL.lock().await;
    let user = format!("onus-operator-gate-{}", &onus_testenv::random_suffix()[..6]);
    // Everything onus reads and writes, but not webhooks, CRDs or APIServices.
    let env = TestEnv::start_as("norbac", &user, None).await;
    grant(
        &env,
        "core",
        &user,
        &[
            "",
            "apps",
            "batch",
            "networking.k8s.io",
            "rbac.authorization.k8s.io",
            "events.k8s.io",
            "onus.dev",
        ],
    )
    .await;
    let ns = env.namespace("blind", &[]).await;
    let policy = env.apply_policy("net", network_spec(json!({}))).await;
    let rp = env
        .wait_status(&policy, "held: backends unknown", |s| {
            waiting(s)
                == [format!(
                    "NetworkPolicy waits in {ns}: webhooks and APIServices not listed yet"
                )]
        })
        .await;
    let s = rp.status.expect("status");
    assert!(is(&s, "NET-01", Fail, 1), "{:?}", control(&s, "NET-01"));
    assert!(deny_policy(&env.client, &ns).await.is_none());

    // Granted: the watches list (after their backoff) and the deny goes in.
    grant(
        &env,
        "backends",
        &user,
        &[
            "admissionregistration.k8s.io",
            "apiextensions.k8s.io",
            "apiregistration.k8s.io",
        ],
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while deny_policy(&env.client, &ns).await.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no default-deny within 90 s of the grant"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_webhook_called_by_a_service_dns_name_holds_the_deny_in_that_namespace() {
    // `clientConfig.url` naming a Service by its cluster DNS name reaches the Service as
    // `clientConfig.service` does: a deny in front of it would cut the webhook off alike.
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("gate-url").await;
    let plain = env.namespace("plain", &[]).await;
    let hooked = env.namespace("hooked", &[]).await;
    let hook = format!("{}-hook", env.id);
    let mut by_url = webhook(&hook, &hooked);
    by_url["webhooks"][0]["clientConfig"] =
        json!({"url": format!("https://hook.{hooked}.svc.cluster.local:443/validate")});
    env.create(None, by_url).await;
    let expected = format!("NetworkPolicy waits in {hooked}: backs webhook {hook}");
    held_in_front_of_the_webhook(&env, &plain, &hooked, &hook, &expected).await;
}

#[tokio::test]
async fn a_webhook_called_by_a_service_cluster_ip_holds_the_deny_in_that_services_namespace() {
    // `clientConfig.url` with an IP address reaches whichever Service has that cluster IP: the
    // deny waits in that Service's namespace, and only there.
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("gate-ip").await;
    let plain = env.namespace("plain", &[]).await;
    let hooked = env.namespace("hooked", &[]).await;
    let service = env
        .create(
            Some(&hooked),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hook"},
                   "spec": {"ports": [{"port": 443}], "selector": {"app": "hook"}}}),
        )
        .await;
    let ip = service["spec"]["clusterIP"]
        .as_str()
        .expect("the API server allocates a cluster IP")
        .to_string();
    // An IPv4 address written as IPv4-mapped IPv6, which the API server accepts and dials as
    // the IPv4 address (the plain spellings are unit-tested).
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        format!("[::ffff:{ip}]")
    };
    let hook = format!("{}-hook", env.id);
    let mut by_ip = webhook(&hook, &hooked);
    by_ip["webhooks"][0]["clientConfig"] = json!({"url": format!("https://{host}:443/validate")});
    env.create(None, by_ip).await;
    let expected =
        format!("NetworkPolicy waits in {hooked}: backs webhook {hook} (by cluster IP {ip})");
    held_in_front_of_the_webhook(&env, &plain, &hooked, &hook, &expected).await;
}

/// With webhook `hook` (already created) calling into `hooked`: a network-only Enforce policy
/// denies `plain`, holds the deny in `hooked` with the `expected` waiting message, and puts
/// none there; the webhook is deleted afterwards.
async fn held_in_front_of_the_webhook(
    env: &TestEnv,
    plain: &str,
    hooked: &str,
    hook: &str,
    expected: &str,
) {
    let policy = env.apply_policy("net", network_spec(json!({}))).await;
    until("the plain namespace denied", async || {
        deny_policy(&env.client, plain).await.is_some()
    })
    .await;
    let rp = env
        .wait_status(&policy, "held in front of the webhook", |s| {
            waiting(s).iter().any(|w| w == expected)
        })
        .await;
    assert!(
        deny_policy(&env.client, hooked).await.is_none(),
        "default-deny in front of {hook}: {:?}",
        waiting(&rp.status.expect("status"))
    );
    env.delete(
        None,
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        hook,
    )
    .await;
}
