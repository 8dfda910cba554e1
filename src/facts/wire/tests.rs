use k8s_openapi::api::core::v1::PodSpec;
use serde_json::{Value, json};

use super::*;
use crate::facts::security_spec;

/// A container with every field the checks read set, and fields they do not read too.
fn container(name: &str) -> Value {
    let probe = json!({
        "httpGet": {"host": "10.0.0.1", "port": 8080, "path": "/"},
        "tcpSocket": {"host": "10.0.0.2", "port": 81},
        "grpc": {"port": 9000},
        "exec": {"command": ["true"]}
    });
    json!({
        "name": name,
        "image": "registry.example/app:1",
        "command": ["run"], "args": ["--flag"],
        "env": [{"name": "A", "value": "b"},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}],
        "envFrom": [{"configMapRef": {"name": "cfg"}}],
        "resources": {"limits": {"cpu": "1"}},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "ports": [{"containerPort": 80}, {"containerPort": 443, "hostPort": 443, "hostIP": "1.2.3.4"}],
        "livenessProbe": probe, "readinessProbe": probe, "startupProbe": probe,
        "lifecycle": {
            "postStart": {"httpGet": {"host": "evil", "port": 80}},
            "preStop": {"tcpSocket": {"host": "evil", "port": 81}}
        },
        "securityContext": {
            "privileged": true,
            "allowPrivilegeEscalation": true,
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
            "procMount": "Unmasked",
            "readOnlyRootFilesystem": false,
            "runAsNonRoot": false,
            "runAsUser": 0,
            "runAsGroup": 0,
            "seLinuxOptions": {"type": "spc_t", "user": "u", "role": "r", "level": "s0"},
            "seccompProfile": {"type": "Unconfined"},
            "appArmorProfile": {"type": "Unconfined"},
            "windowsOptions": {"hostProcess": true, "runAsUserName": "x"}
        }
    })
}

fn kitchen_sink() -> Value {
    json!({
        "containers": [container("app"), container("sidecar")],
        "initContainers": [container("init")],
        "ephemeralContainers": [container("debugger")],
        "hostNetwork": true, "hostPID": true, "hostIPC": true, "hostUsers": false,
        "os": {"name": "linux"},
        "serviceAccountName": "builder",
        "nodeSelector": {"zone": "a"},
        "securityContext": {
            "runAsNonRoot": false, "runAsUser": 0, "runAsGroup": 0, "fsGroup": 1,
            "seLinuxOptions": {"type": "container_engine_t"},
            "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"},
            "appArmorProfile": {"type": "Localhost", "localhostProfile": "p"},
            "sysctls": [{"name": "kernel.msgmax", "value": "1"}],
            "windowsOptions": {"hostProcess": false},
            "supplementalGroups": [5]
        },
        "volumes": [
            {"name": "root", "hostPath": {"path": "/"}},
            {"name": "nfs", "nfs": {"server": "s", "path": "/"}},
            {"name": "cfg", "configMap": {"name": "cfg"}},
            {"name": "scratch", "emptyDir": {}}
        ]
    })
}

#[test]
fn every_field_a_check_reads_survives_decoding() {
    // What the checks read is defined by `security_spec`: the wire shape must keep all of it.
    let spec = kitchen_sink();
    let typed: PodSpec = serde_json::from_value(spec.clone()).expect("typed");
    let slim: SlimPodSpec = serde_json::from_value(spec).expect("slim");
    assert_eq!(
        security_spec(&slim.clone().into_pod_spec()),
        security_spec(&typed)
    );
    assert_eq!(slim.secret_env(), ["init", "app", "sidecar", "debugger"]);
}

#[test]
fn every_field_of_the_security_projection_is_set_by_the_kitchen_sink() {
    // Guards the test above: a field the fixture leaves unset could be dropped unnoticed.
    let typed: PodSpec = serde_json::from_value(kitchen_sink()).expect("typed");
    let projected = serde_json::to_value(security_spec(&typed)).expect("json");
    let container = &projected["containers"][0];
    for field in [
        "securityContext",
        "ports",
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
        "lifecycle",
    ] {
        assert!(!container[field].is_null(), "container field {field}");
    }
    for field in [
        "containers",
        "initContainers",
        "ephemeralContainers",
        "securityContext",
        "hostNetwork",
        "hostPID",
        "hostIPC",
        "hostUsers",
        "os",
        "volumes",
    ] {
        assert!(!projected[field].is_null(), "pod field {field}");
    }
}

#[test]
fn a_cron_job_template_is_found_under_its_job_template() {
    let cron: WorkloadObject = serde_json::from_value(json!({
        "metadata": {"name": "nightly", "namespace": "ops"},
        "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": {
            "metadata": {"annotations": {"a": "b"}},
            "spec": {"containers": [{"name": "job"}]}
        }}}}
    }))
    .expect("cron job");
    assert!(cron.template(false).is_none());
    let template = cron.template(true).expect("template");
    assert_eq!(
        template.spec.as_ref().expect("spec").containers[0].name,
        "job"
    );
}

#[test]
fn null_fields_decode_as_absent() {
    let pod: PodObject = serde_json::from_value(json!({
        "metadata": {"name": "p", "annotations": null, "ownerReferences": null},
        "spec": {"containers": [{"name": "a", "env": null, "securityContext": null}],
                 "volumes": null}
    }))
    .expect("pod");
    assert!(pod.metadata.annotations.is_none());
    assert!(pod.spec.expect("spec").volumes.is_none());
}
