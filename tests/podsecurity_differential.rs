//! Differential test: onus's Pod Security evaluation against the real PodSecurity admission of a
//! kube-apiserver v1.37.2. Every corpus pod is dry-run created in namespaces enforcing each
//! (level, version); onus must admit exactly what the server admits, both the evaluation the
//! controller runs and `onus check` on the same pods written as files.

use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::PostParams};
use onus::crd::PodSecurityLevel;
use onus::podsecurity::{Version, evaluate};
use serde_json::{Value, json};

/// Pinned versions exercise the version gates: v1.18 (seccomp annotations, no restricted
/// seccomp/capabilities), v1.24 (no Windows exemptions), v1.30 (SELinux types), v1.34 (no
/// user-namespace relaxations yet), v1.36 (sysctls before v1.37).
const VERSIONS: &[&str] = &["latest", "v1.18", "v1.24", "v1.30", "v1.34", "v1.36"];

const IMAGE: &str = "registry.k8s.io/pause:3.10";

struct Case {
    name: &'static str,
    pod: Value,
    /// Added through the ephemeralcontainers subresource: Pod create rejects them.
    ephemeral: Option<Value>,
}

/// `onus check` on the corpus written as files, once per (level, version) target with a
/// policy at that level and version: the Pods it reports under the Pod Security controls must
/// be exactly those the server rejected. (Same code as the controller; this proves the offline
/// path, from YAML files through `check`'s decoding, agrees with the admission too.)
fn check_disagreements(
    corpus: &[Case],
    rejected: &BTreeMap<(String, String), BTreeSet<usize>>,
    server_minor: Option<u32>,
) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("onus-psa-check-{}", std::process::id()));
    let pods = dir.join("pods");
    std::fs::create_dir_all(&pods).expect("temp dir");
    for (i, case) in corpus.iter().enumerate() {
        let mut pod = serde_json::to_value(pod_of(case)).expect("pod");
        pod["metadata"]["name"] = json!(format!("p{i}"));
        pod["metadata"]["namespace"] = json!("psa");
        pod["apiVersion"] = json!("v1");
        pod["kind"] = json!("Pod");
        std::fs::write(pods.join(format!("p{i}.json")), pod.to_string()).expect("write pod");
    }
    let kube_version = server_minor.map(|m| format!("v1.{m}"));
    let mut failures = Vec::new();
    for ((level, version), server_rejected) in rejected {
        let policy = dir.join(format!("policy-{level}-{version}.json"));
        let spec = json!({"apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
            "metadata": {"name": "psa"},
            "spec": {"serviceModel": "PaaS",
                     "controls": {"podSecurity": {"level": level, "version": version}}}});
        std::fs::write(&policy, spec.to_string()).expect("write policy");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_onus"));
        command
            .args(["check", "-o", "json", "--policy"])
            .arg(&policy)
            .arg("-f")
            .arg(&pods);
        if let Some(v) = &kube_version {
            command.args(["--kube-version", v]);
        }
        let output = command.output().expect("onus check runs");
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("onus check JSON ({e}): {output:?}"));
        // The Pod Security Standards controls (WKL-01 is the namespace labels, WKL-10 the
        // default namespace).
        let reported: BTreeSet<usize> = report["controls"]
            .as_array()
            .expect("controls")
            .iter()
            .filter(|c| c["family"] == "podSecurity" && c["id"] != "WKL-01" && c["id"] != "WKL-10")
            .flat_map(|c| c["offenders"].as_array().cloned().unwrap_or_default())
            .filter_map(|o| {
                o["object"]
                    .as_str()?
                    .strip_prefix("Pod/psa/p")?
                    .parse()
                    .ok()
            })
            .collect();
        for i in server_rejected.symmetric_difference(&reported) {
            let who = if reported.contains(i) {
                "onus check reports it, the server admits it"
            } else {
                "the server rejects it, onus check does not report it"
            };
            failures.push(format!(
                "check {level} {version} {:?}: {who}",
                corpus[*i].name
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    failures
}

/// RFC 7386 merge: objects merge recursively, `null` deletes, anything else replaces.
fn merge(mut base: Value, patch: Value) -> Value {
    match (&mut base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(&k);
                } else {
                    let old = b.remove(&k).unwrap_or(Value::Null);
                    b.insert(k, merge(old, v));
                }
            }
            base
        }
        (_, p) => p,
    }
}

fn container(name: &str, security_context: Value) -> Value {
    json!({"name": name, "image": IMAGE, "securityContext": security_context})
}

fn hardened() -> Value {
    json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
}

/// A pod with one unhardened container: passes baseline only.
fn bare() -> Value {
    json!({"metadata": {}, "spec": {"containers": [{"name": "app", "image": IMAGE}]}})
}

/// A pod that passes restricted at every version.
fn restricted() -> Value {
    json!({"metadata": {}, "spec": {
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container("app", hardened())],
    }})
}

/// `restricted()` with the app container's security context patched.
fn restricted_app(patch: Value) -> Value {
    merge(
        restricted(),
        json!({"spec": {"containers": [container("app", merge(hardened(), patch))]}}),
    )
}

fn bare_app(security_context: Value) -> Value {
    merge(
        bare(),
        json!({"spec": {"containers": [container("app", security_context)]}}),
    )
}

fn spec(base: Value, patch: Value) -> Value {
    merge(base, json!({"spec": patch}))
}

fn annotated(base: Value, key: &str, value: &str) -> Value {
    merge(base, json!({"metadata": {"annotations": {key: value}}}))
}

fn with_sysctl(name: &str) -> Value {
    spec(
        restricted(),
        json!({"securityContext": {"sysctls": [{"name": name, "value": "1"}]}}),
    )
}

fn with_volume(volume: Value) -> Value {
    spec(restricted(), json!({"volumes": [volume]}))
}

fn probe_app(probes: Value) -> Value {
    let app = merge(container("app", hardened()), probes);
    spec(restricted(), json!({"containers": [app]}))
}

fn corpus() -> Vec<Case> {
    let case = |name, pod| Case {
        name,
        pod,
        ephemeral: None,
    };
    let eph = |name, sc: Value| Case {
        name,
        pod: restricted(),
        ephemeral: Some(json!({"name": "debug", "image": IMAGE, "securityContext": sc})),
    };
    let windows = json!({"os": {"name": "windows"}});
    let userns = json!({"hostUsers": false});
    let tcp_host = json!({"tcpSocket": {"port": 80, "host": "10.0.0.1"}});
    vec![
        case("bare", bare()),
        case("restricted", restricted()),
        case(
            "seccomp pod Localhost",
            spec(
                restricted(),
                json!({"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}}),
            ),
        ),
        case(
            "seccomp on container only",
            merge(
                restricted_app(json!({"seccompProfile": {"type": "RuntimeDefault"}})),
                json!({"spec": {"securityContext": {"seccompProfile": null}}}),
            ),
        ),
        case(
            "seccomp missing",
            spec(
                restricted(),
                json!({"securityContext": {"seccompProfile": null}}),
            ),
        ),
        case(
            "seccomp pod Unconfined",
            spec(
                restricted(),
                json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
            ),
        ),
        case(
            "seccomp container Unconfined",
            restricted_app(json!({"seccompProfile": {"type": "Unconfined"}})),
        ),
        case(
            "seccomp annotation unconfined",
            annotated(
                bare(),
                "seccomp.security.alpha.kubernetes.io/pod",
                "unconfined",
            ),
        ),
        case(
            "runAsNonRoot on container only",
            merge(
                restricted_app(json!({"runAsNonRoot": true})),
                json!({"spec": {"securityContext": {"runAsNonRoot": null}}}),
            ),
        ),
        case(
            "runAsNonRoot pod true container false",
            restricted_app(json!({"runAsNonRoot": false})),
        ),
        case(
            "runAsNonRoot missing on init container",
            merge(
                restricted_app(json!({"runAsNonRoot": true})),
                json!({"spec": {
            "securityContext": {"runAsNonRoot": null},
            "initContainers": [container("init", hardened())]}}),
            ),
        ),
        case(
            "runAsUser 0 on pod",
            spec(restricted(), json!({"securityContext": {"runAsUser": 0}})),
        ),
        case(
            "runAsUser 0 on container",
            restricted_app(json!({"runAsUser": 0})),
        ),
        case("runAsUser 1000", restricted_app(json!({"runAsUser": 1000}))),
        case(
            "allowPrivilegeEscalation true",
            restricted_app(json!({"allowPrivilegeEscalation": true})),
        ),
        case(
            "add NET_RAW",
            bare_app(json!({"capabilities": {"add": ["NET_RAW"]}})),
        ),
        case(
            "add lowercase chown",
            bare_app(json!({"capabilities": {"add": ["chown"]}})),
        ),
        case(
            "add CHOWN restricted",
            restricted_app(json!({"capabilities": {"add": ["CHOWN"]}})),
        ),
        case(
            "add NET_BIND_SERVICE restricted",
            restricted_app(json!({"capabilities": {"add": ["NET_BIND_SERVICE"]}})),
        ),
        case(
            "add SYS_TIME restricted",
            restricted_app(json!({"capabilities": {"add": ["SYS_TIME"]}})),
        ),
        case(
            "drop lowercase all",
            restricted_app(json!({"capabilities": {"drop": ["all"]}})),
        ),
        case("privileged", bare_app(json!({"privileged": true}))),
        case(
            "privileged init container",
            spec(
                restricted(),
                json!({"initContainers": [container("init", json!({"privileged": true}))]}),
            ),
        ),
        case(
            "hardened init container",
            spec(
                restricted(),
                json!({"initContainers": [container("init", hardened())]}),
            ),
        ),
        case(
            "hostNetwork",
            spec(restricted(), json!({"hostNetwork": true})),
        ),
        case(
            "hostPID and hostIPC",
            spec(restricted(), json!({"hostPID": true, "hostIPC": true})),
        ),
        case(
            "hostPort 8080",
            spec(
                restricted(),
                json!({"containers": [merge(container("app", hardened()), json!({"ports": [{"containerPort": 8080, "hostPort": 8080}]}))]}),
            ),
        ),
        case(
            "hostPort 0",
            spec(
                restricted(),
                json!({"containers": [merge(container("app", hardened()), json!({"ports": [{"containerPort": 8080, "hostPort": 0}]}))]}),
            ),
        ),
        case(
            "windows runAsNonRoot",
            spec(
                bare(),
                merge(
                    windows.clone(),
                    json!({"securityContext": {"runAsNonRoot": true}}),
                ),
            ),
        ),
        case("windows bare", spec(bare(), windows.clone())),
        case(
            "windows hostProcess",
            spec(
                bare(),
                merge(
                    windows.clone(),
                    json!({"hostNetwork": true, "securityContext": {"runAsNonRoot": true, "windowsOptions": {"hostProcess": true, "runAsUserName": "NT AUTHORITY\\SYSTEM"}}}),
                ),
            ),
        ),
        case(
            "userns procMount Unmasked restricted",
            spec(
                restricted_app(json!({"procMount": "Unmasked"})),
                userns.clone(),
            ),
        ),
        case(
            "userns procMount Unmasked bare",
            spec(bare_app(json!({"procMount": "Unmasked"})), userns.clone()),
        ),
        case(
            "userns runAsUser 0",
            spec(
                restricted(),
                merge(
                    userns.clone(),
                    json!({"securityContext": {"runAsNonRoot": null, "runAsUser": 0}}),
                ),
            ),
        ),
        case("userns restricted", spec(restricted(), userns.clone())),
        case(
            "sysctl kernel.shm_rmid_forced",
            with_sysctl("kernel.shm_rmid_forced"),
        ),
        case(
            "sysctl ip_local_reserved_ports",
            with_sysctl("net.ipv4.ip_local_reserved_ports"),
        ),
        case(
            "sysctl tcp_keepalive_time",
            with_sysctl("net.ipv4.tcp_keepalive_time"),
        ),
        case("sysctl tcp_rmem", with_sysctl("net.ipv4.tcp_rmem")),
        case(
            "sysctl tcp_slow_start_after_idle",
            with_sysctl("net.ipv4.tcp_slow_start_after_idle"),
        ),
        case("sysctl kernel.msgmax", with_sysctl("kernel.msgmax")),
        case(
            "AppArmor annotation runtime/default",
            annotated(
                restricted(),
                "container.apparmor.security.beta.kubernetes.io/app",
                "runtime/default",
            ),
        ),
        case(
            "AppArmor annotation unconfined",
            annotated(
                restricted(),
                "container.apparmor.security.beta.kubernetes.io/app",
                "unconfined",
            ),
        ),
        case(
            "AppArmor pod field Unconfined",
            spec(
                restricted(),
                json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}),
            ),
        ),
        case(
            "AppArmor container field Localhost",
            restricted_app(
                json!({"appArmorProfile": {"type": "Localhost", "localhostProfile": "k8s-nginx"}}),
            ),
        ),
        case(
            "SELinux container_engine_t",
            restricted_app(json!({"seLinuxOptions": {"type": "container_engine_t"}})),
        ),
        case(
            "SELinux spc_t",
            spec(
                restricted(),
                json!({"securityContext": {"seLinuxOptions": {"type": "spc_t"}}}),
            ),
        ),
        case(
            "SELinux user",
            restricted_app(json!({"seLinuxOptions": {"user": "system_u"}})),
        ),
        case(
            "SELinux role",
            restricted_app(json!({"seLinuxOptions": {"role": "system_r"}})),
        ),
        case(
            "SELinux level only",
            spec(
                restricted(),
                json!({"securityContext": {"seLinuxOptions": {"level": "s0:c123,c456"}}}),
            ),
        ),
        case(
            "liveness httpGet host",
            probe_app(json!({"livenessProbe": {"httpGet": {"port": 80, "host": "example.com"}}})),
        ),
        case(
            "readiness tcpSocket host",
            probe_app(json!({"readinessProbe": tcp_host})),
        ),
        case(
            "preStop httpGet host",
            probe_app(
                json!({"lifecycle": {"preStop": {"httpGet": {"port": 80, "host": "example.com"}}}}),
            ),
        ),
        case(
            "probe without host",
            probe_app(json!({"startupProbe": {"httpGet": {"port": 80, "path": "/healthz"}}})),
        ),
        case(
            "allowed volume types",
            spec(
                restricted(),
                json!({"volumes": [
                    {"name": "cm", "configMap": {"name": "c"}},
                    {"name": "s", "secret": {"secretName": "s"}},
                    {"name": "e", "emptyDir": {}},
                    {"name": "d", "downwardAPI": {"items": [{"path": "l", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                    {"name": "p", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}},
                    {"name": "pvc", "persistentVolumeClaim": {"claimName": "c"}},
                    {"name": "csi", "csi": {"driver": "inline.example.com"}},
                    {"name": "eph", "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}},
                ]}),
            ),
        ),
        case(
            "hostPath volume",
            with_volume(json!({"name": "h", "hostPath": {"path": "/var/log"}})),
        ),
        case(
            "nfs volume",
            with_volume(json!({"name": "n", "nfs": {"server": "nfs.example.com", "path": "/"}})),
        ),
        case(
            "image volume",
            with_volume(json!({"name": "i", "image": {"reference": IMAGE}})),
        ),
        eph("ephemeral container unhardened", json!({})),
        eph("ephemeral container hardened", hardened()),
        eph(
            "ephemeral container privileged",
            json!({"privileged": true}),
        ),
    ]
}

enum Outcome {
    Admitted,
    Rejected(String),
}

/// Asks the API server whether it admits `case` in `ns`, without persisting anything.
async fn server_outcome(
    client: &Client,
    ns: &str,
    index: usize,
    case: &Case,
) -> Result<Outcome, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let name = format!("case-{index}");
    let mut pod: Pod =
        serde_json::from_value(merge(case.pod.clone(), json!({"metadata": {"name": name}})))
            .map_err(|e| format!("corpus pod does not parse: {e}"))?;
    let result = match &case.ephemeral {
        None => pods.create(&dry_run, &pod).await,
        Some(container) => {
            // The base pod is restricted-compliant; only the ephemeral container is judged.
            let base = pods
                .create(&PostParams::default(), &pod)
                .await
                .map_err(|e| format!("base pod: {e}"))?;
            pod = base;
            pod.spec
                .get_or_insert_with(Default::default)
                .ephemeral_containers = Some(vec![
                serde_json::from_value(container.clone()).map_err(|e| e.to_string())?,
            ]);
            pods.replace_ephemeral_containers(&name, &dry_run, &pod)
                .await
        }
    };
    match result {
        Ok(_) => Ok(Outcome::Admitted),
        Err(kube::Error::Api(status))
            if status.code == 403 && status.message.contains("violates PodSecurity") =>
        {
            Ok(Outcome::Rejected(status.message))
        }
        Err(kube::Error::Api(status)) => Err(format!(
            "server error {} (invalid corpus spec?): {}",
            status.code, status.message
        )),
        Err(e) => Err(format!("request failed: {e}")),
    }
}

fn pod_of(case: &Case) -> Pod {
    let mut pod: Pod = serde_json::from_value(case.pod.clone()).expect("corpus pod parses");
    if let Some(container) = &case.ephemeral {
        let spec = pod.spec.get_or_insert_with(Default::default);
        spec.ephemeral_containers = Some(vec![
            serde_json::from_value(container.clone()).expect("ephemeral container parses"),
        ]);
    }
    pod
}

#[tokio::test(flavor = "multi_thread")]
async fn onus_agrees_with_the_podsecurity_admission() {
    let cp = onus_testenv::shared();
    let client = cp.client().await;
    let corpus = corpus();
    assert!(corpus.len() >= 40, "corpus too small: {}", corpus.len());

    let mut targets = Vec::new();
    for (level, label) in [
        (PodSecurityLevel::Baseline, "baseline"),
        (PodSecurityLevel::Restricted, "restricted"),
    ] {
        for &version in VERSIONS {
            let prefix = format!("psa-{label}-{}", version.replace('.', "-"));
            let labels = [
                ("pod-security.kubernetes.io/enforce", label),
                ("pod-security.kubernetes.io/enforce-version", version),
            ];
            let ns = cp.namespace(&client, &prefix, &labels).await;
            let version: Version = version.parse().expect("pinned version parses");
            targets.push((level, version, ns));
        }
    }

    let jobs = targets.iter().flat_map(|target| {
        corpus
            .iter()
            .enumerate()
            .map(move |(i, case)| (target, i, case))
    });
    let results: Vec<_> = stream::iter(jobs)
        .map(|((level, version, ns), i, case)| {
            let client = client.clone();
            async move {
                let server = server_outcome(&client, ns, i, case).await;
                (*level, *version, case, server)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;

    // The server judges `latest` and newer pins as its own minor, and so does the controller
    // (`Index::admission_version`): an older API server is compared at what it applies.
    let info = client.apiserver_version().await.expect("server version");
    let server_minor = onus::podsecurity::server_minor(&info);
    let (mut admitted, mut rejected, mut failures) = (0, 0, Vec::new());
    // Per target, the corpus indices the server rejected (for `onus check` below).
    let mut results_by_target: BTreeMap<(String, String), BTreeSet<usize>> = BTreeMap::new();
    for (level, version, case, server) in results {
        let index = corpus
            .iter()
            .position(|c| std::ptr::eq(c, case))
            .expect("a corpus case");
        let rejected_by_server = results_by_target
            .entry((format!("{level:?}").to_lowercase(), version.to_string()))
            .or_default();
        if matches!(server, Ok(Outcome::Rejected(_))) {
            rejected_by_server.insert(index);
        }
        let pod = pod_of(case);
        let violations = evaluate(
            &pod.metadata,
            pod.spec.as_ref().expect("corpus pods have a spec"),
            level,
            version.on_server(server_minor),
        );
        let at = format!("{:?} {version} {:?}", level, case.name);
        match server {
            Err(e) => failures.push(format!("{at}: {e}")),
            Ok(Outcome::Admitted) if violations.is_empty() => admitted += 1,
            Ok(Outcome::Rejected(_)) if !violations.is_empty() => rejected += 1,
            Ok(Outcome::Admitted) => {
                failures.push(format!("{at}: server admits, onus reports {violations:?}"))
            }
            Ok(Outcome::Rejected(msg)) => {
                failures.push(format!("{at}: onus admits, server says: {msg}"))
            }
        }
    }
    failures.extend(check_disagreements(
        &corpus,
        &results_by_target,
        server_minor,
    ));
    println!(
        "podsecurity differential: {} specs x {} (level, version) targets: {admitted} admitted and {rejected} rejected by both, {} mismatches",
        corpus.len(),
        targets.len(),
        failures.len()
    );
    failures.sort();
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
