//! Pod Security labels the admission cannot parse, against the real API server: what the
//! PodSecurity admission of kube-apiserver v1.37.2 does with them, and that onus reads them the
//! same way (an invalid level enforces restricted, but leaves `warn` and `audit` privileged; an
//! invalid version means latest).

mod common;

use common::{TestEnv, is};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use onus::crd::ControlResult::*;
use serde_json::{Value, json};

const ENFORCE: &str = "pod-security.kubernetes.io/enforce";
const ENFORCE_VERSION: &str = "pod-security.kubernetes.io/enforce-version";
const WARN: &str = "pod-security.kubernetes.io/warn";
const AUDIT: &str = "pod-security.kubernetes.io/audit";

/// A pod that passes baseline but not restricted (no hardened securityContext).
fn bare_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bare"},
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}
    })
}

/// Sets labels through the namespace's status subresource. The PodSecurity admission skips
/// subresources, so this is how a namespace comes to carry labels it would refuse on create or
/// update (as does a namespace labelled before the admission was enabled).
async fn label_through_status(env: &TestEnv, ns: &str, labels: &[(&str, &str)]) {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let patched = Api::<Namespace>::all(env.client.clone())
        .patch_status(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": labels}})),
        )
        .await
        .unwrap_or_else(|e| panic!("labelling {ns} through status: {e}"));
    let have = patched.metadata.labels.unwrap_or_default();
    for (k, v) in labels {
        assert_eq!(have.get(&k).map(|s| json!(s)), Some(v), "label {k} on {ns}");
    }
}

/// The message of the PodSecurity rejection of a dry-run create of `bare_pod()`, if any.
async fn rejection(env: &TestEnv, ns: &str) -> Option<String> {
    let pod: Pod = serde_json::from_value(bare_pod()).expect("pod literal");
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match Api::<Pod>::namespaced(env.client.clone(), ns)
        .create(&dry_run, &pod)
        .await
    {
        Ok(_) => None,
        Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("PodSecurity") => {
            Some(s.message)
        }
        Err(e) => panic!("dry-run pod in {ns}: {e}"),
    }
}

/// The stderr of a dry-run create of `bare_pod()` through kubectl, which prints the API
/// server's warnings (the client library does not return them).
fn kubectl_warnings(env: &TestEnv, ns: &str) -> String {
    let out = common::kubectl_with_input(
        env.cp,
        &["create", "--dry-run=server", "-n", ns, "-f", "-"],
        bare_pod().to_string().as_bytes(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kubectl create in {ns}: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_enforce_label_enforces_restricted_at_latest_and_passes_wkl01() {
    let env = TestEnv::start("psa-enforce").await;

    // The admission refuses the label where it can see it.
    let refused: Namespace = serde_json::from_value(json!({"metadata": {
        "name": format!("{}-refused", env.id), "labels": {ENFORCE: "Restricted"}
    }}))
    .expect("namespace literal");
    let created = Api::<Namespace>::all(env.client.clone())
        .create(&PostParams::default(), &refused)
        .await;
    assert!(
        matches!(&created, Err(kube::Error::Api(s)) if s.message.contains(ENFORCE)),
        "creating a namespace with enforce=Restricted: {created:?}"
    );

    let level = env.namespace("bad-level", &[]).await;
    label_through_status(&env, &level, &[(ENFORCE, "Restricted")]).await;
    let version = env.namespace("bad-version", &[]).await;
    label_through_status(
        &env,
        &version,
        &[(ENFORCE, "restricted"), (ENFORCE_VERSION, "v1.x")],
    )
    .await;

    for ns in [&level, &version] {
        // The admission reads namespaces from its informer: labels just written take effect a
        // moment later.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut message = rejection(&env, ns).await;
        while message.is_none() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            message = rejection(&env, ns).await;
        }
        assert!(
            message
                .as_deref()
                .is_some_and(|m| m.contains(r#"violates PodSecurity "restricted:latest""#)),
            "a baseline-only pod in {ns}: {message:?}"
        );
    }

    let policy = env
        .apply_policy(
            "restricted",
            json!({"serviceModel": "PaaS", "controls": {"podSecurity": {"level": "restricted"}}}),
        )
        .await;
    // Both namespaces evaluated (a first evaluation before the watch delivers them would pass
    // WKL-01 without judging either).
    env.wait_status(&policy, "WKL-01 passing in both namespaces", |s| {
        is(s, "WKL-01", Pass, 0) && s.summary.as_ref().is_some_and(|s| s.namespaces == 2)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_warn_label_warns_of_nothing_and_fails_aud01() {
    let env = TestEnv::start("psa-warn").await;
    let invalid = env.namespace("warn-invalid", &[]).await;
    label_through_status(
        &env,
        &invalid,
        &[(WARN, "Restricted"), (AUDIT, "restricted")],
    )
    .await;
    let valid = env.namespace("warn-valid", &[]).await;
    label_through_status(&env, &valid, &[(WARN, "restricted"), (AUDIT, "restricted")]).await;

    // The admission reads namespaces from its informer, which sees label changes a moment after
    // they are written, in order: once the valid namespace's (written last) warn, the invalid
    // one's labels are in effect too, and its silence means something.
    let expected = r#"would violate PodSecurity "restricted:latest""#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut warned = kubectl_warnings(&env, &valid);
    while !warned.contains(expected) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        warned = kubectl_warnings(&env, &valid);
    }
    assert!(warned.contains(expected), "warn=restricted: {warned}");
    let silent = kubectl_warnings(&env, &invalid);
    assert!(
        !silent.contains("PodSecurity"),
        "warn=Restricted fails open, yet: {silent}"
    );

    let policy = env
        .apply_policy("visibility", json!({"serviceModel": "PaaS"}))
        .await;
    // Both namespaces evaluated with their labels: the watch may deliver the second namespace
    // and the labels a moment after the policy's first evaluation.
    let rp = env
        .wait_status(&policy, "AUD-01 failing in one namespace", |s| {
            is(s, "AUD-01", Fail, 1) && s.summary.as_ref().is_some_and(|s| s.namespaces == 2)
        })
        .await;
    let status = rp.status.expect("status");
    assert_eq!(
        common::control(&status, "AUD-01").examples,
        [format!("Namespace/{invalid}")]
    );
}
