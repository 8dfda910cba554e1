//! Attacks on Enforce mode's fail-closed guarantees, on the real API server: ways a namespace
//! owner, a second manager of the same labels, or an ordinary lifecycle could make onus leave a
//! namespace less protected than before it came. Each scenario runs alone (onus releases what no
//! policy of its instance wants, and the control plane is shared).

mod common;

use std::time::Duration;

use common::enforce::{as_root, labels, refuse_network_policies, until};
use common::{TestEnv, deployment, kubectl_ok};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use onus::crd::ResponsibilityPolicy;
use serde_json::json;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ENFORCE: &str = "pod-security.kubernetes.io/enforce";
const WARN: &str = "pod-security.kubernetes.io/warn";

async fn label(client: &Client, ns: &str, key: &str) -> Option<String> {
    labels(client, ns).await.get(key).cloned()
}

async fn wait_label(env: &TestEnv, ns: &str, key: &str, value: &str) {
    until(&format!("{key}={value} on {ns}"), async || {
        label(&env.client, ns, key).await.as_deref() == Some(value)
    })
    .await;
}

fn enforce_restricted() -> serde_json::Value {
    json!({"serviceModel": "PaaS", "mode": "Enforce",
           "controls": {"podSecurity": {"level": "restricted"}}})
}

/// Deletes the policy and waits until onus has let go of the namespace's labels.
async fn delete_and_wait_release(env: &TestEnv, policy: &str, ns: &str) {
    Api::<ResponsibilityPolicy>::all(env.client.clone())
        .delete(policy, &Default::default())
        .await
        .expect("delete policy");
    until("onus let go", async || {
        !labels(&env.client, ns).await.contains_key(WARN)
    })
    .await;
}

/// A namespace owner who may annotate their namespace (the Pod Security labels themselves being
/// guarded, e.g. by an admission policy) must not be able to make onus write
/// `enforce=privileged` on release by forging the record of what onus replaced.
#[tokio::test]
async fn a_forged_previous_labels_annotation_does_not_make_onus_restore_privileged() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("forged-prev").await;
    let ns = env.namespace("forged", &[]).await;
    let policy = env.apply_policy("p", enforce_restricted()).await;
    wait_label(&env, &ns, ENFORCE, "restricted").await;

    let forged = format!(
        "onus.dev/previous-labels={}",
        json!({ENFORCE: "privileged", "pod-security.kubernetes.io/enforce-version": "latest"})
    );
    kubectl_ok(
        env.cp,
        &["annotate", "--overwrite", "namespace", &ns, &forged],
    );
    // Give onus a chance to see the annotation before it lets go.
    tokio::time::sleep(Duration::from_secs(1)).await;

    delete_and_wait_release(&env, &policy, &ns).await;
    assert_eq!(
        label(&env.client, &ns, ENFORCE).await,
        None,
        "before onus the namespace had no enforce label; onus must not write one on release"
    );
}

/// The owner first labels `enforce=baseline`; a later GitOps apply adopts the stricter level onus
/// set (`kubectl apply --server-side` of the same value: ownership shared with onus). Releasing
/// must leave the owner's declared value alone, not force the old value over it.
#[tokio::test]
async fn release_does_not_overwrite_a_label_another_manager_also_applies() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("coowned").await;
    let ns = env.namespace("coowned", &[]).await;
    kubectl_ok(
        env.cp,
        &["label", "namespace", &ns, &format!("{ENFORCE}=baseline")],
    );
    let policy = env.apply_policy("p", enforce_restricted()).await;
    wait_label(&env, &ns, ENFORCE, "restricted").await;

    let gitops = json!({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": ns, "labels": {ENFORCE: "restricted"}}});
    Api::<Namespace>::all(env.client.clone())
        .patch(&ns, &PatchParams::apply("gitops"), &Patch::Apply(&gitops))
        .await
        .expect("the same value applies without conflict");

    delete_and_wait_release(&env, &policy, &ns).await;
    // Let a forced restore land if it comes after the warn label went.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        label(&env.client, &ns, ENFORCE).await.as_deref(),
        Some("restricted"),
        "gitops still declares enforce=restricted; onus must not lower it to baseline"
    );
}

/// The owner's `enforce=baseline` is first shared with onus (onus enforces baseline while
/// restricted waits for a root workload), then raised to restricted once the workload goes. The
/// owner's baseline must come back when onus lets go, not vanish (no label: privileged).
#[tokio::test]
async fn a_level_shared_with_the_owner_then_raised_is_restored_on_release() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("shared-raise").await;
    let ns = env.namespace("shared", &[]).await;
    kubectl_ok(
        env.cp,
        &["label", "namespace", &ns, &format!("{ENFORCE}=baseline")],
    );
    env.create(Some(&ns), deployment("rootapp", as_root(), json!({})))
        .await;
    let policy = env.apply_policy("p", enforce_restricted()).await;
    wait_label(&env, &ns, WARN, "restricted").await;
    assert_eq!(
        label(&env.client, &ns, ENFORCE).await.as_deref(),
        Some("baseline")
    );

    kubectl_ok(
        env.cp,
        &[
            "delete",
            "deployment",
            "rootapp",
            "-n",
            &ns,
            "--cascade=foreground",
            "--wait=true",
            "--timeout=60s",
        ],
    );
    wait_label(&env, &ns, ENFORCE, "restricted").await;

    delete_and_wait_release(&env, &policy, &ns).await;
    assert_eq!(
        label(&env.client, &ns, ENFORCE).await.as_deref(),
        Some("baseline"),
        "the owner's enforce=baseline must come back"
    );
}

fn kubectl_succeeds(env: &TestEnv, args: &[&str]) -> bool {
    env.cp
        .kubectl()
        .args(args)
        .output()
        .expect("kubectl")
        .status
        .success()
}

/// A ValidatingAdmissionPolicy refusing to delete NetworkPolicies in `ns`, in effect on return.
async fn forbid_network_policy_deletion(env: &TestEnv, ns: &str) -> String {
    let name = refuse_network_policies(
        env,
        "keep-netpol",
        ns,
        &["DELETE"],
        "NetworkPolicies stay here",
    )
    .await;
    // The admission plugin loads policies asynchronously: wait until it refuses.
    until("the admission policy refuses deletion", async || {
        !kubectl_succeeds(
            env,
            &[
                "delete",
                "networkpolicy",
                "onus-default-deny",
                "-n",
                ns,
                "--dry-run=server",
            ],
        )
    })
    .await;
    name
}

/// The last Enforce policy is deleted while the API server refuses the release (its finalizer
/// goes anyway, so the deletion is not held up). README: what was refused "is retried by later
/// convergences". With no policy left, nothing reconciles: once the refusal is lifted, the
/// release must still happen.
#[tokio::test]
async fn a_release_refused_while_the_last_policy_goes_is_retried() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("release-retry").await;
    let ns = env.namespace("retry", &[]).await;
    let policy = env
        .apply_policy("p", json!({"serviceModel": "PaaS", "mode": "Enforce"}))
        .await;
    until("onus-default-deny applied", async || {
        kubectl_succeeds(
            &env,
            &["get", "networkpolicy", "onus-default-deny", "-n", &ns],
        )
    })
    .await;
    let vap = forbid_network_policy_deletion(&env, &ns).await;

    Api::<ResponsibilityPolicy>::all(env.client.clone())
        .delete(&policy, &Default::default())
        .await
        .expect("delete policy");
    until("policy gone", async || {
        Api::<ResponsibilityPolicy>::all(env.client.clone())
            .get_opt(&policy)
            .await
            .expect("get")
            .is_none()
    })
    .await;
    until("the other remediations released", async || {
        !labels(&env.client, &ns).await.contains_key(WARN)
    })
    .await;
    assert!(
        kubectl_succeeds(
            &env,
            &["get", "networkpolicy", "onus-default-deny", "-n", &ns]
        ),
        "the release of the NetworkPolicy was refused"
    );

    for kind in [
        "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicy",
    ] {
        env.delete(None, "admissionregistration.k8s.io/v1", kind, &vap)
            .await;
    }
    until("the refused release retried", async || {
        !kubectl_succeeds(
            &env,
            &["get", "networkpolicy", "onus-default-deny", "-n", &ns],
        )
    })
    .await;
}

/// A careless `kubectl label --overwrite ...enforce=privileged` on a namespace onus labelled
/// (it had no enforce label before) is drift: onus puts restricted back, and must not remember
/// privileged as the value to restore when it lets go.
#[tokio::test]
async fn a_label_overwritten_by_hand_is_not_restored_on_release() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("overwrite").await;
    let ns = env.namespace("overwrite", &[]).await;
    let policy = env.apply_policy("p", enforce_restricted()).await;
    wait_label(&env, &ns, ENFORCE, "restricted").await;

    kubectl_ok(
        env.cp,
        &[
            "label",
            "--overwrite",
            "namespace",
            &ns,
            &format!("{ENFORCE}=privileged"),
        ],
    );
    wait_label(&env, &ns, ENFORCE, "restricted").await;

    delete_and_wait_release(&env, &policy, &ns).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        label(&env.client, &ns, ENFORCE).await,
        None,
        "there was no enforce label before onus"
    );
}
