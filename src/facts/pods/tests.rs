use super::*;
use crate::facts::{self, WorkloadKind};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// The Pod as the watch decodes it.
fn wire(p: &Pod) -> wire::PodObject {
    serde_json::from_value(serde_json::to_value(p).expect("json")).expect("wire pod")
}

fn pod(v: Value) -> Pod {
    serde_json::from_value(v).expect("pod fixture")
}

fn owned_by(kind: &str, api_version: &str, spec: Value) -> Pod {
    pod(json!({
        "metadata": {"name": "web-1", "namespace": "shop", "ownerReferences": [
            {"apiVersion": api_version, "kind": kind, "name": "web", "uid": "1", "controller": true}]},
        "spec": spec,
    }))
}

fn restricted() -> Value {
    json!({"allowPrivilegeEscalation": false, "runAsNonRoot": true,
           "seccompProfile": {"type": "RuntimeDefault"}, "capabilities": {"drop": ["ALL"]}})
}

#[test]
fn a_pod_run_by_a_workload_controller_is_kept_apart_with_its_controller() {
    for (kind, api_version, expected) in [
        ("ReplicaSet", "apps/v1", WorkloadKind::ReplicaSet),
        ("StatefulSet", "apps/v1", WorkloadKind::StatefulSet),
        ("DaemonSet", "apps/v1", WorkloadKind::DaemonSet),
        ("Job", "batch/v1", WorkloadKind::Job),
    ] {
        let p = owned_by(kind, api_version, json!({"containers": [{"name": "app"}]}));
        assert_eq!(
            owned_pod(&wire(&p)).map(|f| f.controller),
            Some((expected, "web".to_string())),
            "{kind}"
        );
        assert_eq!(
            facts::pod(&wire(&p)),
            None,
            "{kind}: not a workload of its own"
        );
    }
}

#[test]
fn bare_pods_and_pods_of_other_controllers_are_not_owned_pods() {
    let bare = pod(json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "app"}]}}));
    assert_eq!(owned_pod(&wire(&bare)), None);
    let custom = owned_by(
        "Database",
        "example.com/v1",
        json!({"containers": [{"name": "app"}]}),
    );
    assert_eq!(owned_pod(&wire(&custom)), None);
}

#[test]
fn an_ephemeral_container_counts_like_any_other() {
    let p = owned_by(
        "ReplicaSet",
        "apps/v1",
        json!({
            "containers": [{"name": "app", "securityContext": restricted()}],
            "ephemeralContainers": [{"name": "debug", "image": "busybox",
                "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}],
        }),
    );
    let fact = owned_pod(&wire(&p)).expect("owned pod");
    assert!(
        fact.failing_controls(PodSecurityLevel::Baseline, Version::Latest)
            .contains("WKL-04")
    );
    assert!(
        fact.failing_controls(PodSecurityLevel::Restricted, Version::Minor(30))
            .contains("WKL-04")
    );
}

#[test]
fn only_what_the_checks_read_is_kept() {
    let p = owned_by(
        "ReplicaSet",
        "apps/v1",
        json!({
            "containers": [{"name": "app", "image": "nginx", "command": ["run"],
                "env": [{"name": "A", "value": "1"}],
                "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}],
                "ports": [{"containerPort": 80}, {"containerPort": 443, "hostPort": 443}]}],
            "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}},
                        {"name": "host", "hostPath": {"path": "/var"}}],
            "nodeName": "n1", "tolerations": [{"operator": "Exists"}],
        }),
    );
    let mut p = p;
    p.metadata.annotations = Some(
        [
            ("kubectl.kubernetes.io/last-applied-configuration", "{...}"),
            (
                "container.apparmor.security.beta.kubernetes.io/app",
                "unconfined",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    );
    let fact = owned_pod(&wire(&p)).expect("owned pod");
    // Four bytes of verdicts and the controller's name: no spec, no annotations.
    assert!(std::mem::size_of::<OwnedPodFact>() <= 40);
    let baseline: Vec<_> = fact
        .failing_controls(PodSecurityLevel::Baseline, Version::Latest)
        .iter()
        .collect();
    // hostPath and the host port (WKL-02), the AppArmor annotation (WKL-05).
    assert_eq!(baseline, ["WKL-02", "WKL-05"]);
}

/// Pods that each fail one kind of check (or pass), to compare the projection with the pod.
fn varied_pods() -> Vec<Pod> {
    let app = |sc: Value| json!({"containers": [{"name": "app", "securityContext": sc}]});
    let with = |extra: Value| {
        let mut spec = app(restricted());
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        spec
    };
    let mut specs = vec![
        app(restricted()),
        app(json!({})),
        with(json!({"hostNetwork": true})),
        with(json!({"hostPID": true})),
        with(json!({"hostIPC": true})),
        // Exemptions show only on a pod that would otherwise fail.
        json!({"hostUsers": false, "containers": [{"name": "app"}]}),
        json!({"os": {"name": "windows"}, "containers": [{"name": "app"}]}),
        with(json!({"securityContext": {"windowsOptions": {"hostProcess": true}}})),
        with(
            json!({"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_notsent_lowat", "value": "1"}]}}),
        ),
        with(json!({"securityContext": {"seLinuxOptions": {"type": "spc_t"}}})),
        with(json!({"securityContext": {"runAsUser": 0}})),
        with(json!({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]})),
        with(json!({"volumes": [{"name": "n", "nfs": {"server": "s", "path": "/"}}]})),
        with(json!({"volumes": [{"name": "s", "secret": {"secretName": "s"}}]})),
        with(
            json!({"initContainers": [{"name": "init", "securityContext": {"privileged": true}}]}),
        ),
        with(
            json!({"ephemeralContainers": [{"name": "debug", "securityContext": {"privileged": true}}]}),
        ),
    ];
    for container in [
        json!({"ports": [{"containerPort": 80, "hostPort": 8080}]}),
        json!({"livenessProbe": {"httpGet": {"host": "1.2.3.4", "port": 80}}}),
        json!({"readinessProbe": {"tcpSocket": {"host": "1.2.3.4", "port": 80}}}),
        json!({"startupProbe": {"httpGet": {"host": "1.2.3.4", "port": 80}}}),
        json!({"lifecycle": {"preStop": {"tcpSocket": {"host": "evil", "port": 1}}}}),
        json!({"securityContext": {"procMount": "Unmasked"}}),
        json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}),
    ] {
        let mut spec = app(restricted());
        merge(&mut spec["containers"][0], container);
        specs.push(spec);
    }
    let mut pods: Vec<Pod> = specs
        .into_iter()
        .map(|spec| owned_by("Job", "batch/v1", spec))
        .collect();
    for annotation in [
        "seccomp.security.alpha.kubernetes.io/pod",
        "container.seccomp.security.alpha.kubernetes.io/app",
        "container.apparmor.security.beta.kubernetes.io/app",
    ] {
        let mut p = owned_by("Job", "batch/v1", app(restricted()));
        p.metadata.annotations = Some([(annotation.to_string(), "unconfined".to_string())].into());
        pods.push(p);
    }
    pods
}

/// Merges `extra` into `base`, objects recursively.
fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

#[test]
fn the_projection_fails_exactly_what_the_full_pod_fails() {
    for p in varied_pods() {
        let fact = owned_pod(&wire(&p)).expect("owned pod");
        let spec = p.spec.as_ref().expect("spec");
        for level in [PodSecurityLevel::Baseline, PodSecurityLevel::Restricted] {
            for version in [
                Version::Latest,
                Version::Minor(10),
                Version::Minor(25),
                Version::Minor(36),
            ] {
                let full: crate::podsecurity::Controls =
                    crate::podsecurity::evaluate(&p.metadata, spec, level, version)
                        .into_iter()
                        .map(|v| v.check)
                        .collect();
                assert_eq!(
                    fact.failing_controls(level, version),
                    full,
                    "{level:?} {version} {spec:?}"
                );
            }
        }
    }
}

#[test]
fn replica_sets_and_jobs_name_the_deployment_or_cron_job_above_them() {
    let rs: wire::WorkloadObject = serde_json::from_value(json!({"metadata": {"name": "web-5d8", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "1", "controller": true}]}}))
    .expect("rs");
    assert_eq!(replica_set_owner(&rs), Some("web".to_string()));
    let job: wire::WorkloadObject = serde_json::from_value(json!({"metadata": {"name": "nightly-1", "ownerReferences": [
        {"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": "1", "controller": true}]}}))
    .expect("job");
    assert_eq!(job_owner(&job), Some("nightly".to_string()));
    let alone: wire::WorkloadObject =
        serde_json::from_value(json!({"metadata": {"name": "once"}})).expect("job");
    assert_eq!(job_owner(&alone), None);
}
