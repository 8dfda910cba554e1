//! Kubernetes' own RBAC on the real API server: the committed bootstrap data is what
//! kube-apiserver creates, and look-alikes of it (by name or label) are judged like any
//! customer grant.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{TestEnv, control, is, kubectl_ok};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use kube::{Api, Client, api::ListParams};
use onus::crd::ControlResult::*;
use onus::rbac::defaults;
use onus_testenv::ControlPlane;
use serde_json::{Value, json};

/// The committed data of the API server's version: `src/rbac/bootstrap-v1.<minor>.json`.
fn data_file(minor: u32) -> String {
    format!(
        "{}/src/rbac/bootstrap-v1.{minor}.json",
        env!("CARGO_MANIFEST_DIR")
    )
}
/// Set to write the data file from this control plane instead of comparing with it.
const REGENERATE: &str = "ONUS_REGENERATE_RBAC_DEFAULTS";
const BOOTSTRAP_LABEL: &str = "kubernetes.io/bootstrapping";

/// The scenarios change cluster-scoped default objects (and add labelled look-alikes), which
/// the data check must not see: the tests of this binary take turns.
static CLUSTER_RBAC: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn committed_bootstrap_data_is_what_the_api_server_bootstraps() {
    let _turn = CLUSTER_RBAC.lock().await;
    let cp = onus_testenv::shared();
    let client = cp.client().await;
    let live = live_objects(&client).await;
    let info = client.apiserver_version().await.expect("server version");
    let minor = onus::podsecurity::server_minor(&info).expect("a 1.x API server");
    let data_file = data_file(minor);
    let hint = format!(
        "regenerate with `{REGENERATE}=1 cargo test --test rbac_defaults \
         committed_bootstrap_data` (on a fresh control plane of this version, \
         {}) and review the diff; a new file must be listed in src/rbac/defaults.rs",
        info.git_version
    );
    if std::env::var_os(REGENERATE).is_some() {
        write_data(&live, &info.git_version, &data_file);
        return;
    }
    let defaults = defaults::for_minor(Some(minor));

    let text = std::fs::read_to_string(&data_file).unwrap_or_else(|e| {
        panic!("no bootstrap data for this API server ({data_file}: {e}); {hint}")
    });
    let data: Value = serde_json::from_str(&text).expect("data file is JSON");
    assert_eq!(data["kubernetesVersion"], info.git_version, "{hint}");
    assert_eq!(defaults.version(), info.git_version, "{hint}");
    let committed: BTreeMap<Key, Value> = data["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| (key(o), o.clone()))
        .collect();
    let mut problems = Vec::new();
    for (k, want) in &committed {
        match live.get(k) {
            None => problems.push(format!("{k:?}: in the data, not on the server")),
            Some(got) if got.object != *want => {
                problems.push(format!(
                    "{k:?}:\n  data:   {want}\n  server: {}",
                    got.object
                ));
            }
            Some(_) => {}
        }
    }
    for (k, got) in &live {
        if got.bootstrapped && !committed.contains_key(k) {
            problems.push(format!(
                "{k:?}: bootstrapped by the server, not in the data"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "RBAC bootstrap data differs from the API server; {hint}:\n{}",
        problems.join("\n")
    );

    // The aggregating defaults' rules are the aggregation controller's: what the data says the
    // defaults contribute must be there, and anything else must come from a ClusterRole that
    // is not a default. (The test cluster's controller-manager does not run that controller by
    // default; then `rules` stays empty, which is what the authorizer sees, too.)
    let others: Vec<PolicyRule> = live
        .iter()
        .filter(|(k, _)| k.0 == "ClusterRole" && !committed.contains_key(*k))
        .flat_map(|(_, o)| o.rules.clone())
        .collect();
    for (k, _) in committed.iter().filter(|(k, _)| k.0 == "ClusterRole") {
        let Some(expected) = defaults.aggregated_default_rules(&k.2) else {
            continue;
        };
        assert!(!expected.is_empty(), "{k:?} aggregates nothing");
        let rules = aggregated_rules(&client, &k.2, expected).await;
        for rule in &rules {
            assert!(
                expected.contains(rule) || others.contains(rule),
                "{}: rule {rule:?} comes from neither a default nor a customer role",
                k.2
            );
        }
    }
}

#[tokio::test]
async fn look_alikes_of_kubernetes_defaults_are_judged_like_customer_grants() {
    let env = TestEnv::start("rbac-defaults").await;
    let _turn = CLUSTER_RBAC.lock().await;
    let policy = env
        .apply_policy("iam", json!({"serviceModel": "PaaS"}))
        .await;
    // Untouched, Kubernetes' own RBAC breaks no IAM control.
    let untouched = |s: &_| {
        [
            "IAM-01", "IAM-02", "IAM-03", "IAM-04", "IAM-05", "IAM-06", "IAM-07", "IAM-08",
        ]
        .iter()
        .all(|id| is(s, id, Pass, 0))
    };
    env.wait_status(&policy, "defaults pass", untouched).await;

    let cleanup = Cleanup(env.cp);
    // A binding that only looks like Kubernetes' own by its name.
    kubectl_ok(
        env.cp,
        &[
            "create",
            "clusterrolebinding",
            "system:ops",
            "--clusterrole=cluster-admin",
            "--user=mallory",
        ],
    );
    // A subject added to the default cluster-admin binding.
    kubectl_ok(
        env.cp,
        &[
            "patch",
            "clusterrolebinding",
            "cluster-admin",
            "--type=json",
            "-p",
            r#"[{"op": "add", "path": "/subjects/-",
                 "value": {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "trudy"}}]"#,
        ],
    );
    // A wildcard role with a system name and the bootstrapping label.
    kubectl_ok(
        env.cp,
        &[
            "create",
            "clusterrole",
            "system:wild",
            "--verb=*",
            "--resource=*.*",
        ],
    );
    kubectl_ok(
        env.cp,
        &[
            "label",
            "clusterrole",
            "system:wild",
            &format!("{BOOTSTRAP_LABEL}=rbac-defaults"),
        ],
    );
    kubectl_ok(
        env.cp,
        &[
            "create",
            "clusterrolebinding",
            "system:wild",
            "--clusterrole=system:wild",
            "--user=eve",
        ],
    );

    let rp = env
        .wait_status(&policy, "look-alikes reported", |s| {
            is(s, "IAM-01", Fail, 2) && is(s, "IAM-02", Fail, 1)
        })
        .await;
    let s = rp.status.expect("status");
    let mut iam01 = control(&s, "IAM-01").examples.clone();
    iam01.sort();
    assert_eq!(
        iam01,
        [
            "ClusterRoleBinding/cluster-admin: User/trudy",
            "ClusterRoleBinding/system:ops: User/mallory",
        ],
        "the extra subject is reported, the default system:masters is not"
    );
    assert_eq!(
        control(&s, "IAM-02").examples,
        ["ClusterRoleBinding/system:wild: User/eve"],
        "cluster-admin's default wildcards are not IAM-02; system:wild's are"
    );
    for id in ["IAM-07", "IAM-08"] {
        assert_eq!(control(&s, id).result, Pass, "{id}: {:?}", control(&s, id));
    }

    drop(cleanup);
    env.wait_status(&policy, "defaults pass again", untouched)
        .await;
}

/// Removes what the scenario adds, also when it fails: cluster-scoped objects outlive the
/// test, and the data check shares the control plane.
struct Cleanup(&'static ControlPlane);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let run = |args: &[&str]| {
            // Best effort: a failing step must not hide the test's own failure.
            let _ = self.0.kubectl().args(args).output();
        };
        run(&[
            "delete",
            "--ignore-not-found",
            "clusterrolebinding",
            "system:ops",
            "system:wild",
        ]);
        run(&["delete", "--ignore-not-found", "clusterrole", "system:wild"]);
        // The default binding has exactly one subject; "test" keeps this from removing another.
        run(&[
            "patch",
            "clusterrolebinding",
            "cluster-admin",
            "--type=json",
            "-p",
            r#"[{"op": "test", "path": "/subjects/1/name", "value": "trudy"},
                {"op": "remove", "path": "/subjects/1"}]"#,
        ]);
    }
}

/// (kind, namespace, name) of an object in the compact form.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key(String, String, String);

fn key(o: &Value) -> Key {
    let s = |f: &str| o[f].as_str().unwrap_or_default().to_owned();
    Key(s("kind"), s("namespace"), s("name"))
}

/// A live object in the data file's compact form.
struct Live {
    object: Value,
    /// Carries the bootstrapping label.
    bootstrapped: bool,
    /// ClusterRoles: the live rules (for aggregating ones, as the controller filled them).
    rules: Vec<PolicyRule>,
}

/// Every RBAC object of the cluster, keyed and in compact form (what the data file holds:
/// the fields that decide what an object grants).
async fn live_objects(client: &Client) -> BTreeMap<Key, Live> {
    let lp = ListParams::default();
    let mut out = BTreeMap::new();
    let add = |kind: &str, meta: &kube::api::ObjectMeta, fields: Vec<(&str, Value)>| {
        let labels = meta.labels.clone().unwrap_or_default();
        let bootstrapped = labels
            .get(BOOTSTRAP_LABEL)
            .is_some_and(|v| v == "rbac-defaults");
        let mut object = json!({"kind": kind, "name": meta.name.clone().unwrap_or_default()});
        if let Some(ns) = &meta.namespace {
            object["namespace"] = json!(ns);
        }
        for (f, v) in fields {
            object[f] = v;
        }
        (
            key(&object),
            Live {
                object,
                bootstrapped,
                rules: Vec::new(),
            },
        )
    };
    for cr in list::<ClusterRole>(client, &lp).await {
        // Labels other than the bootstrapping one decide what aggregates where.
        let labels: BTreeMap<String, String> = cr
            .metadata
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k != BOOTSTRAP_LABEL)
            .collect();
        let mut fields = Vec::new();
        if !labels.is_empty() {
            fields.push(("labels", json!(labels)));
        }
        match &cr.aggregation_rule {
            // Its rules are the aggregation controller's, checked separately.
            Some(a) => fields.push(("aggregationRule", to(a))),
            None => fields.push(("rules", to(&cr.rules.clone().unwrap_or_default()))),
        }
        let (k, mut l) = add("ClusterRole", &cr.metadata, fields);
        l.rules = cr.rules.clone().unwrap_or_default();
        out.insert(k, l);
    }
    for r in list::<Role>(client, &lp).await {
        let rules = to(&r.rules.clone().unwrap_or_default());
        let (k, l) = add("Role", &r.metadata, vec![("rules", rules)]);
        out.insert(k, l);
    }
    for b in list::<ClusterRoleBinding>(client, &lp).await {
        let subjects = to(&b.subjects.clone().unwrap_or_default());
        let fields = vec![("roleRef", to(&b.role_ref)), ("subjects", subjects)];
        let (k, l) = add("ClusterRoleBinding", &b.metadata, fields);
        out.insert(k, l);
    }
    for b in list::<RoleBinding>(client, &lp).await {
        let subjects = to(&b.subjects.clone().unwrap_or_default());
        let fields = vec![("roleRef", to(&b.role_ref)), ("subjects", subjects)];
        let (k, l) = add("RoleBinding", &b.metadata, fields);
        out.insert(k, l);
    }
    out
}

fn to<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("serialisable")
}

async fn list<K>(client: &Client, lp: &ListParams) -> Vec<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Api::<K>::all(client.clone())
        .list(lp)
        .await
        .expect("list RBAC objects")
        .items
}

/// The live rules of an aggregating ClusterRole: none while no aggregation controller runs,
/// else (once it has caught up) at least the default ones.
async fn aggregated_rules(client: &Client, name: &str, expected: &[PolicyRule]) -> Vec<PolicyRule> {
    let api = Api::<ClusterRole>::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rules = api
            .get(name)
            .await
            .expect("get ClusterRole")
            .rules
            .unwrap_or_default();
        let missing: Vec<_> = expected.iter().filter(|r| !rules.contains(r)).collect();
        if rules.is_empty() || missing.is_empty() {
            return rules;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: default rules not aggregated in 30s: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes the bootstrapped objects, one per line so a Kubernetes upgrade reads as a diff.
fn write_data(live: &BTreeMap<Key, Live>, version: &str, data_file: &str) {
    let lines: Vec<String> = live
        .values()
        .filter(|l| l.bootstrapped)
        .map(|l| {
            let o = &l.object;
            // kind, namespace, name first; then the content in a fixed order.
            let mut parts = Vec::new();
            for f in [
                "kind",
                "namespace",
                "name",
                "labels",
                "aggregationRule",
                "rules",
                "roleRef",
                "subjects",
            ] {
                if let Some(v) = o.get(f) {
                    parts.push(format!("{}:{v}", json!(f)));
                }
            }
            format!("{{{}}}", parts.join(","))
        })
        .collect();
    let text = format!(
        "{{\"kubernetesVersion\": {},\n\"source\": \"kube-apiserver bootstrap RBAC (default \
         feature gates), objects labelled {BOOTSTRAP_LABEL}=rbac-defaults; generated by \
         tests/rbac_defaults.rs\",\n\"objects\": [\n{}\n]}}\n",
        json!(version),
        lines.join(",\n")
    );
    std::fs::write(data_file, text).expect("write data file");
    eprintln!("wrote {} objects to {data_file}", lines.len());
}
