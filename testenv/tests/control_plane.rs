//! The harness starts a real Kubernetes control plane: these tests prove it is the real thing
//! (version, storage, controllers, admission), that it logs who wrote what, and that it
//! cleans up after itself.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use onus_testenv::{ControlPlane, Options, kubernetes_version, shared};
use std::time::{Duration, Instant};

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("test literal")
}

#[tokio::test]
async fn server_reports_the_pinned_version() {
    let client = shared().client().await;
    let info = client.apiserver_version().await.expect("GET /version");
    assert_eq!(info.git_version, kubernetes_version());
}

#[tokio::test]
async fn objects_are_stored_and_read_back() {
    let cp = shared();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "store", &[]).await;
    let api = Api::<ConfigMap>::namespaced(client, &ns);
    let cm: ConfigMap = from_json(serde_json::json!({
        "metadata": {"name": "settings"}, "data": {"colour": "blue"}
    }));
    api.create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let read = api.get("settings").await.expect("get");
    assert_eq!(
        read.data
            .unwrap_or_default()
            .get("colour")
            .map(String::as_str),
        Some("blue")
    );
}

#[tokio::test]
async fn namespace_deletion_completes_because_the_namespace_controller_runs() {
    let cp = shared();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "doomed", &[]).await;
    let api = Api::<Namespace>::all(client);
    api.delete(&ns, &DeleteParams::default())
        .await
        .expect("delete");
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.get_opt(&ns).await.expect("get").is_some() {
        assert!(
            Instant::now() < deadline,
            "namespace {ns} still exists after 60s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn pod_security_admission_rejects_a_privileged_pod_under_restricted() {
    let cp = shared();
    let client = cp.client().await;
    let ns = cp
        .namespace(
            &client,
            "restricted",
            &[("pod-security.kubernetes.io/enforce", "restricted")],
        )
        .await;
    let pods = Api::<Pod>::namespaced(client, &ns);
    let pod: Pod = from_json(serde_json::json!({
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "app", "image": "busybox",
                                  "securityContext": {"privileged": true}}]}
    }));
    let err = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect_err("a privileged pod must be rejected");
    let text = err.to_string();
    assert!(
        text.contains("violates PodSecurity \"restricted:latest\""),
        "{text}"
    );
}

#[tokio::test]
async fn the_audit_log_records_each_write_by_whom_and_with_what_outcome() {
    let cp = shared();
    let admin = cp.client().await;
    let ns = cp.namespace(&admin, "audited", &[]).await;
    let user = format!("someone-{}", onus_testenv::random_suffix());
    let config_map =
        |name: &str| -> ConfigMap { from_json(serde_json::json!({"metadata": {"name": name}})) };

    // Without a binding RBAC forbids the write; the attempt is logged all the same.
    let nobody = cp.client_as(&user, None).await;
    let err = Api::<ConfigMap>::namespaced(nobody, &ns)
        .create(&PostParams::default(), &config_map("denied"))
        .await
        .expect_err("a user without a binding may not write");
    assert!(err.to_string().contains("forbidden"), "{err}");
    let masters = cp.client_as(&user, Some("system:masters")).await;
    let configs = Api::<ConfigMap>::namespaced(masters, &ns);
    configs
        .create(&PostParams::default(), &config_map("allowed"))
        .await
        .expect("system:masters may write");
    // Reads are not logged.
    configs.get("allowed").await.expect("get");

    let mine: Vec<_> = cp
        .audit_events()
        .into_iter()
        .filter(|e| e.user == user)
        .collect();
    let seen: Vec<_> = mine
        .iter()
        .map(|e| {
            (
                e.verb.as_str(),
                e.resource.as_str(),
                e.namespace.as_str(),
                e.code,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("create", "configmaps", ns.as_str(), Some(403)),
            ("create", "configmaps", ns.as_str(), Some(201)),
        ],
        "{mine:#?}"
    );
    assert!(
        mine[1].groups.iter().any(|g| g == "system:masters"),
        "{:?}",
        mine[1].groups
    );
    assert!(mine[0].received <= mine[1].received);
}

#[test]
fn an_owned_control_plane_leaves_no_processes_or_files_behind() {
    let base = std::env::temp_dir().join(format!("onus-testenv-owned-{}", std::process::id()));
    let cp = ControlPlane::start(Options {
        controllers: vec![],
        base_dir: base.clone(),
        ..Options::default()
    })
    .expect("start");
    let dir = cp.dir().to_path_buf();
    assert!(dir.join("kubeconfig").is_file());
    let pids = pids_running_from(&dir);
    assert_eq!(
        pids.len(),
        2,
        "etcd and kube-apiserver run from {}",
        dir.display()
    );

    drop(cp);

    assert!(!dir.exists(), "{} removed", dir.display());
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} stopped"
        );
    }
    let _ = std::fs::remove_dir_all(base);
}

/// Processes whose working directory is `dir` (the harness starts every child there).
fn pids_running_from(dir: &std::path::Path) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir))
        .collect()
}
