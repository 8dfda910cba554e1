//! onus fails closed: no protection it applied is lowered or removed as a side effect of
//! tightening a policy, an invalid edit, a refused write or another policy. Each scenario runs
//! on the real API server, one at a time (onus releases what no policy of its instance wants).

mod common;

use std::time::Duration;

use common::enforce::{as_root, automount, deny_policy, labels, refuse_network_policies, until};
use common::{TestEnv, deployment, hardened, kubectl_ok};
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};
use onus::{
    crd::ResponsibilityPolicy,
    status::{self, ENFORCED, READY},
};
use serde_json::json;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ENFORCE: &str = "pod-security.kubernetes.io/enforce";

fn enforce_at(level: &str) -> serde_json::Value {
    json!({"serviceModel": "PaaS", "mode": "Enforce",
           "controls": {"podSecurity": {"level": level}}})
}

/// Whether the API server admits a privileged pod in `ns` (server-side dry run).
fn privileged_pod_admitted(env: &TestEnv, ns: &str) -> bool {
    env.cp
        .kubectl()
        .args([
            "run",
            "priv",
            "--image=x",
            "--privileged",
            "-n",
            ns,
            "--dry-run=server",
        ])
        .output()
        .expect("kubectl")
        .status
        .success()
}

fn enforced_message(rp: &ResponsibilityPolicy) -> String {
    rp.status
        .as_ref()
        .and_then(|s| status::condition(s, ENFORCED))
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_default()
}

async fn wait_enforce_label(env: &TestEnv, ns: &str, level: &str) {
    until(&format!("enforce={level} on {ns}"), async || {
        labels(&env.client, ns)
            .await
            .get(ENFORCE)
            .map(String::as_str)
            == Some(level)
    })
    .await;
}

/// Checks that the level stays for a while (a removal would show within a few reconciles).
async fn stays(env: &TestEnv, ns: &str, level: &str) {
    for _ in 0..20 {
        assert_eq!(
            labels(&env.client, ns)
                .await
                .get(ENFORCE)
                .map(String::as_str),
            Some(level),
            "enforce label on {ns}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn tightening_a_policy_keeps_the_level_already_enforced() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("tighten").await;
    let shop = env.namespace("shop", &[]).await;
    env.create(Some(&shop), deployment("rootapp", as_root(), json!({})))
        .await;
    let policy = env.apply_policy("p", enforce_at("baseline")).await;
    wait_enforce_label(&env, &shop, "baseline").await;

    env.apply_policy("p", enforce_at("restricted")).await;
    let expected = format!(
        "enforce=baseline in {shop}; restricted waits for 1 workload (Deployment/{shop}/rootapp)"
    );
    let rp = env
        .wait_status(&policy, "restricted waiting", |s| {
            status::condition(s, ENFORCED).is_some_and(|c| c.message.contains(&expected))
        })
        .await;
    assert_eq!(
        rp.status
            .and_then(|s| s.remediation)
            .map(|r| r.enforce_waiting),
        Some(vec![expected])
    );
    stays(&env, &shop, "baseline").await;
    assert!(
        !privileged_pod_admitted(&env, &shop),
        "baseline must still reject a privileged pod"
    );
    let l = labels(&env.client, &shop).await;
    assert_eq!(
        l.get("pod-security.kubernetes.io/warn").map(String::as_str),
        Some("restricted")
    );
}

#[tokio::test]
async fn a_second_stricter_policy_keeps_the_level_already_enforced() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("second").await;
    let shop = env.namespace("shop", &[]).await;
    env.create(Some(&shop), deployment("rootapp", as_root(), json!({})))
        .await;
    env.apply_policy("base", enforce_at("baseline")).await;
    wait_enforce_label(&env, &shop, "baseline").await;

    let strict = env.apply_policy("strict", enforce_at("restricted")).await;
    env.wait_status(&strict, "restricted waiting", |s| {
        status::condition(s, ENFORCED).is_some_and(|c| c.reason == "EnforceWaiting")
    })
    .await;
    stays(&env, &shop, "baseline").await;
    assert!(!privileged_pod_admitted(&env, &shop));

    // Fixing the workload lets restricted through, with no other trigger.
    let mut fixed = hardened();
    fixed["runAsUser"] = json!(1000);
    env.apply(Some(&shop), deployment("rootapp", fixed, json!({})))
        .await;
    wait_enforce_label(&env, &shop, "restricted").await;
}

#[tokio::test]
async fn an_invalid_edit_keeps_every_remediation_until_a_valid_one() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("invalid").await;
    let ns = env.namespace("shop", &[]).await;
    let policy = env
        .apply_policy(
            "p",
            json!({"serviceModel": "PaaS", "mode": "Enforce",
                   "controls": {"network": {"defaultDeny": ["Ingress", "Egress"]}}}),
        )
        .await;
    let rp = env
        .wait_status(&policy, "enforced", |s| {
            status::condition(s, ENFORCED).is_some_and(|c| c.status == "True")
        })
        .await;
    let valid_generation = rp.metadata.generation.expect("generation");

    // Passes the schema, fails validation: a family in Enforce under an Audit policy.
    Api::<ResponsibilityPolicy>::all(env.client.clone())
        .patch(
            &policy,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"mode": "Audit", "controls": {"network": {"mode": "Enforce"}}}}),
            ),
        )
        .await
        .expect("patch");
    let rp = env
        .wait_status(&policy, "invalid", |s| {
            status::condition(s, READY).is_some_and(|c| c.reason == "InvalidSpec")
        })
        .await;
    let ready = rp
        .status
        .as_ref()
        .and_then(|s| status::condition(s, READY))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(ready.contains("spec.controls.network.mode"), "{ready}");
    assert!(
        ready.contains(&format!("generation {valid_generation} stay in place")),
        "{ready}"
    );
    assert_eq!(
        rp.status
            .and_then(|s| s.enforced_spec)
            .map(|e| e.generation),
        Some(valid_generation)
    );
    for _ in 0..20 {
        assert!(
            deny_policy(&env.client, &ns).await.is_some(),
            "NetworkPolicy kept"
        );
        assert_eq!(
            labels(&env.client, &ns)
                .await
                .get(ENFORCE)
                .map(String::as_str),
            Some("restricted")
        );
        assert_eq!(automount(&env.client, &ns).await, Some(false));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let finalizers = Api::<ResponsibilityPolicy>::all(env.client.clone())
        .get(&policy)
        .await
        .expect("policy")
        .metadata
        .finalizers
        .unwrap_or_default();
    assert_eq!(
        finalizers,
        ["onus.dev/cleanup"],
        "the held remediations keep their clean-up"
    );

    // A valid edit resumes: here it relaxes the network family to Audit, which releases it.
    env.apply_policy(
        "p",
        json!({"serviceModel": "PaaS", "mode": "Enforce",
               "controls": {"network": {"mode": "Audit"}}}),
    )
    .await;
    until("network released by a valid edit", async || {
        deny_policy(&env.client, &ns).await.is_none()
    })
    .await;
    assert_eq!(
        labels(&env.client, &ns)
            .await
            .get(ENFORCE)
            .map(String::as_str),
        Some("restricted")
    );
}

/// Refuses creating and updating NetworkPolicies in `ns`, in effect on return.
async fn lock_network_policies(env: &TestEnv, ns: &str) -> String {
    let name = refuse_network_policies(
        env,
        "no-netpol",
        ns,
        &["CREATE", "UPDATE"],
        "NetworkPolicies are locked here",
    )
    .await;
    let probe = br#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"probe"},"spec":{"podSelector":{}}}"#;
    until("the admission policy refuses NetworkPolicies", async || {
        let args = ["create", "-n", ns, "--dry-run=server", "-f", "-"];
        !common::kubectl_with_input(env.cp, &args, probe)
            .status
            .success()
    })
    .await;
    name
}

#[tokio::test]
async fn a_refused_remediation_stalls_nothing() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("refused").await;
    let locked = env.namespace("locked", &[]).await;
    let open = env.namespace("open", &[]).await;
    let vap = lock_network_policies(&env, &locked).await;
    let audit = env
        .apply_policy("audit", json!({"serviceModel": "PaaS"}))
        .await;
    let policy = env
        .apply_policy("p", json!({"serviceModel": "PaaS", "mode": "Enforce"}))
        .await;

    let rp = env
        .wait_status(&policy, "refusal reported", |s| {
            status::condition(s, ENFORCED).is_some_and(|c| c.reason == "RemediationFailed")
        })
        .await;
    let message = enforced_message(&rp);
    assert!(
        message.contains(&format!("NetworkPolicy {locked}/onus-default-deny"))
            && message.contains("NetworkPolicies are locked here"),
        "{message}"
    );
    assert!(
        rp.status.and_then(|s| s.summary).is_some(),
        "controls still evaluated"
    );
    // Every other action proceeds.
    until("open remediated", async || {
        deny_policy(&env.client, &open).await.is_some()
    })
    .await;
    assert_eq!(
        labels(&env.client, &locked)
            .await
            .get(ENFORCE)
            .map(String::as_str),
        Some("restricted")
    );
    assert_eq!(automount(&env.client, &locked).await, Some(false));
    // Reported where people look: a Warning Event on the policy and a metric.
    until("Warning Event on the policy", async || {
        Api::<Event>::all(env.client.clone())
            .list(&ListParams::default().fields(&format!("regarding.name={policy}")))
            .await
            .expect("events")
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("RemediationFailed")
                    && e.type_.as_deref() == Some("Warning")
            })
    })
    .await;
    assert!(
        env.metrics
            .render()
            .contains("onus_remediation_failures_total{kind=\"NetworkPolicy\"}"),
        "{}",
        env.metrics.render()
    );
    // Other policies keep following the cluster.
    env.create(
        Some(&open),
        deployment("priv", json!({"privileged": true}), json!({})),
    )
    .await;
    env.wait_status(&audit, "new violation seen", |s| {
        common::control(s, "WKL-03")
            .examples
            .contains(&format!("Deployment/{open}/priv"))
    })
    .await;

    // Deleting the Enforce policy is not held up by the refusal.
    Api::<ResponsibilityPolicy>::all(env.client.clone())
        .delete(&policy, &Default::default())
        .await
        .expect("delete");
    until("policy deleted", async || {
        Api::<ResponsibilityPolicy>::all(env.client.clone())
            .get_opt(&policy)
            .await
            .expect("get")
            .is_none()
    })
    .await;
    until("open released", async || {
        deny_policy(&env.client, &open).await.is_none()
    })
    .await;
    for kind in [
        "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicy",
    ] {
        env.delete(None, "admissionregistration.k8s.io/v1", kind, &vap)
            .await;
    }
}

#[tokio::test]
async fn a_label_the_owner_set_is_restored_not_removed() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("restore").await;
    let ns = env.namespace("owned", &[]).await;
    kubectl_ok(
        env.cp,
        &["label", "namespace", &ns, &format!("{ENFORCE}=baseline")],
    );
    let policy = env.apply_policy("p", enforce_at("restricted")).await;
    wait_enforce_label(&env, &ns, "restricted").await;

    Api::<ResponsibilityPolicy>::all(env.client.clone())
        .delete(&policy, &Default::default())
        .await
        .expect("delete");
    until("onus let go", async || {
        !labels(&env.client, &ns)
            .await
            .contains_key("pod-security.kubernetes.io/warn")
    })
    .await;
    assert_eq!(
        labels(&env.client, &ns)
            .await
            .get(ENFORCE)
            .map(String::as_str),
        Some("baseline"),
        "the owner's label comes back"
    );
}

#[tokio::test]
async fn system_namespaces_are_never_governed_by_accident() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("system").await;
    let sandbox = env.namespace("sandbox", &[]).await;
    // Every namespace but one: the list adds to Kubernetes' own, it does not replace them.
    let policy = env
        .apply_policy(
            "all",
            json!({"serviceModel": "PaaS", "namespaceSelector": {}, "excludedNamespaces": [sandbox]}),
        )
        .await;
    let rp = env
        .wait_status(&policy, "evaluated", |s| s.summary.is_some())
        .await;
    let s = rp.status.expect("status");
    let server = env
        .client
        .apiserver_version()
        .await
        .expect("server version");
    let minor = server.minor.trim_end_matches('+');
    assert_eq!(
        s.pod_security_version,
        Some(format!("v1.{minor}")),
        "latest, as this API server's admission applies it"
    );
    let net01 = common::control(&s, "NET-01");
    assert!(
        net01.examples.iter().any(|e| e == "Namespace/default"),
        "{:?}",
        net01.examples
    );
    for system in ["kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            !net01.examples.contains(&format!("Namespace/{system}")),
            "{system} governed: {:?}",
            net01.examples
        );
    }
    assert!(!net01.examples.contains(&format!("Namespace/{sandbox}")));

    // Governing one takes the explicit field.
    env.apply_policy(
        "all",
        json!({"serviceModel": "PaaS", "namespaceSelector": {}, "excludedNamespaces": [sandbox],
               "includeSystemNamespaces": ["kube-public"]}),
    )
    .await;
    env.wait_status(&policy, "kube-public governed", |s| {
        common::control(s, "NET-01")
            .examples
            .iter()
            .any(|e| e == "Namespace/kube-public")
    })
    .await;
}

/// `forceEnforce` forces the forcing policy's own level: never another policy's stricter level
/// onto workloads it would reject (the next rollout of the root workload would fail).
#[tokio::test]
async fn one_policy_forces_only_its_own_level() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("force").await;
    let shop = env.namespace("shop", &[]).await;
    env.create(
        Some(&shop),
        deployment("privileged", json!({"privileged": true}), json!({})),
    )
    .await;
    env.apply_policy(
        "forced",
        json!({"serviceModel": "PaaS", "mode": "Enforce",
               "controls": {"podSecurity": {"level": "baseline", "forceEnforce": true}}}),
    )
    .await;
    let strict = env.apply_policy("strict", enforce_at("restricted")).await;
    wait_enforce_label(&env, &shop, "baseline").await;
    env.wait_status(&strict, "restricted waiting", |s| {
        status::condition(s, ENFORCED).is_some_and(|c| {
            c.message.contains(&format!(
                "enforce=baseline in {shop}; restricted waits for 1 workload (Deployment/{shop}/privileged)"
            ))
        })
    })
    .await;
    stays(&env, &shop, "baseline").await;
}
