//! Prevention at admission: the ValidatingAdmissionPolicies onus generates, on the real API
//! server. They are cluster-wide with fixed names, so the tests here run one at a time.
//!
//! Requests under test are made by users outside system:masters (the admin the other tests use
//! is exempt by design), each granted cluster-admin by RBAC so that only admission decides.

mod common;

use std::time::{Duration, Instant};

use common::{TestEnv, control, kubectl_ok, kubectl_with_input};
use k8s_openapi::api::{
    admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    apps::v1::Deployment,
    core::v1::{Pod, Service},
    events::v1::Event,
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use kube::{
    Api, Client,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
        PostParams,
    },
};
use onus::{
    admission::{self, Generated},
    crd::{AdmissionAction, ResponsibilityPolicy},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The shared control plane, its controller-manager also running the ClusterRole aggregation
/// controller (an aggregating ClusterRole gets its rules from it).
fn control_plane() -> &'static onus_testenv::ControlPlane {
    let mut controllers: Vec<String> = onus_testenv::DEFAULT_CONTROLLERS
        .iter()
        .map(|c| c.to_string())
        .collect();
    controllers.push("clusterrole-aggregation-controller".into());
    onus_testenv::configure_shared(onus_testenv::Options {
        controllers,
        ..onus_testenv::Options::default()
    });
    onus_testenv::shared()
}

const DEADLINE: Duration = Duration::from_secs(30);

/// Grants `subject` (a User or Group) cluster-admin, as the exempt admin.
async fn grant_cluster_admin(client: &Client, name: &str, kind: &str, subject: &str) {
    let crb: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}],
    }))
    .expect("binding");
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply("onus-tests").force(),
            &Patch::Apply(&crb),
        )
        .await
        .expect("grant cluster-admin");
}

fn cluster_admin_binding(name: &str, subject: Value) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [subject],
    })
}

fn user(name: &str) -> Value {
    json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name})
}

fn group(name: &str) -> Value {
    json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": name})
}

/// A server-side dry-run create of `obj` (namespaced when `ns` is given): the API server's
/// answer, Ok or the refusal's message.
async fn dry_run<K>(client: &Client, ns: Option<&str>, obj: &Value) -> Result<(), String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns.unwrap_or("default"));
    create(api, obj).await
}

async fn dry_run_cluster<K>(client: &Client, obj: &Value) -> Result<(), String>
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    create(Api::<K>::all(client.clone()), obj).await
}

async fn create<K>(api: Api<K>, obj: &Value) -> Result<(), String>
where
    K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(obj.clone()).expect("object");
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match api.create(&params, &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) => Err(format!("{} {}", s.code, s.message)),
        Err(e) => panic!("dry run: {e}"),
    }
}

/// Waits until `attempt` is refused (admission policies load within moments), and returns
/// the refusal.
async fn until_refused<F: AsyncFn() -> Result<(), String>>(what: &str, attempt: F) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match attempt().await {
            Err(message) => return message,
            Ok(()) if Instant::now() > deadline => panic!("{what}: still admitted after 30s"),
            Ok(()) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn until_admitted<F: AsyncFn() -> Result<(), String>>(what: &str, attempt: F) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match attempt().await {
            Ok(()) => return,
            Err(m) if Instant::now() > deadline => panic!("{what}: still refused after 30s: {m}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The objects with a name onus generates and its label.
async fn generated_names(client: &Client) -> Vec<String> {
    let all = admission::all_names();
    let mut names: Vec<String> = Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/managed-by"))
                .is_some_and(|v| v == "onus")
        })
        .filter_map(|p| p.metadata.name)
        .filter(|n| all.contains(n))
        .collect();
    names.sort();
    names
}

/// A ValidatingAdmissionPolicy and binding that look like onus's: one with onus's label under
/// another name, one with onus's name without the label. Harmless (nothing bound to deny).
async fn look_alikes(client: &Client) -> [String; 2] {
    let params = PatchParams::apply("someone-else").force();
    let policies = Api::<ValidatingAdmissionPolicy>::all(client.clone());
    let names = [
        "onus-look-alike".to_string(),
        "onus-iam-05-warn".to_string(),
    ];
    for (name, labels) in [
        (&names[0], json!({"app.kubernetes.io/managed-by": "onus"})),
        (&names[1], json!({})),
    ] {
        let vap = json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["CREATE"], "resources": ["configmaps"]}]},
                "validations": [{"expression": "true"}],
            },
        });
        policies
            .patch(name, &params, &Patch::Apply(&vap))
            .await
            .expect("look-alike");
    }
    names
}

#[tokio::test]
async fn an_enforce_policy_prevents_cluster_admin_bindings_at_admission() {
    let _serial = SERIAL.lock().await;
    let suffix = &onus_testenv::random_suffix()[..6];
    let operator_user = format!("onus-operator-{suffix}");
    let cp = control_plane();
    let admin = cp.client().await;
    grant_cluster_admin(&admin, &operator_user, "User", &operator_user).await;
    let env = TestEnv::start_admission("prevent", Some(&operator_user)).await;
    let tester = format!("alice-{suffix}");
    grant_cluster_admin(&admin, &tester, "User", &tester).await;
    let alice = cp.client_as(&tester, None).await;
    let lookalikes = look_alikes(&admin).await;
    let break_glass = format!("break-glass-{suffix}");
    let policy = env
        .apply_policy(
            "rbac",
            json!({"serviceModel": "PaaS", "mode": "Enforce",
                   "controls": {"rbac": {"clusterAdminSubjects": [{"kind": "Group", "name": "platform-admins"}]}},
                   "exceptions": [{"controls": ["IAM-01"], "reason": "incident access",
                                   "resources": [{"kind": "ClusterRoleBinding", "name": break_glass}]}]}),
        )
        .await;

    // Denied, with a message naming the control and the policy.
    let zed = cluster_admin_binding(&format!("x-{suffix}"), user("zed"));
    let denied = until_refused("cluster-admin for zed", async || {
        dry_run_cluster::<ClusterRoleBinding>(&alice, &zed).await
    })
    .await;
    for part in [
        "403",
        "onus-iam-01",
        "IAM-01",
        &format!("ResponsibilityPolicy {policy}"),
        "exception",
    ] {
        assert!(denied.contains(part), "{part:?} not in {denied:?}");
    }
    // The allow-listed group, the exception's object, onus itself and system:masters pass.
    let admins = cluster_admin_binding(&format!("admins-{suffix}"), group("platform-admins"));
    dry_run_cluster::<ClusterRoleBinding>(&alice, &admins)
        .await
        .expect("the allow-listed group is admitted");
    let excepted = cluster_admin_binding(&break_glass, user("zed"));
    dry_run_cluster::<ClusterRoleBinding>(&alice, &excepted)
        .await
        .expect("the exception's object is admitted");
    let as_onus = cp.client_as(&operator_user, None).await;
    dry_run_cluster::<ClusterRoleBinding>(&as_onus, &zed)
        .await
        .expect("onus's own identity is exempt");
    let masters = cp
        .client_as(&format!("root-{suffix}"), Some("system:masters"))
        .await;
    dry_run_cluster::<ClusterRoleBinding>(&masters, &zed)
        .await
        .expect("system:masters is exempt");
    // kubectl shows the denial as is.
    let kubeconfig = cp.kubeconfig_as(&tester, None).expect("kubeconfig");
    let out = cp
        .kubectl()
        .env("KUBECONFIG", &kubeconfig)
        .args([
            "create",
            "clusterrolebinding",
            &format!("x-{suffix}"),
            "--clusterrole=cluster-admin",
            "--user=zed",
            "--dry-run=server",
        ])
        .output()
        .expect("kubectl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "kubectl admitted it");
    assert!(
        stderr.contains("IAM-01") && stderr.contains(&policy),
        "{stderr}"
    );

    // Status: prevented at admission vs only detected.
    let rp = env
        .wait_status(&policy, "IAM-01 prevented", |s| {
            s.controls
                .iter()
                .any(|c| c.id == "IAM-01" && c.admission == Some(AdmissionAction::Deny))
        })
        .await;
    let status = rp.status.expect("status");
    for id in [
        "IAM-01", "IAM-02", "IAM-05", "IAM-07", "WKL-10", "NET-05", "DAT-01",
    ] {
        assert_eq!(
            control(&status, id).admission,
            Some(AdmissionAction::Deny),
            "{id}"
        );
    }
    for id in ["IAM-03", "NET-03", "WKL-02"] {
        assert_eq!(control(&status, id).admission, None, "{id}");
    }
    assert_eq!(
        generated_names(&admin).await,
        [
            "onus-dat-01",
            "onus-iam-01",
            "onus-iam-02",
            "onus-iam-05",
            "onus-iam-07",
            "onus-net-05",
            "onus-wkl-10"
        ]
    );

    // Warn mode: admitted, with the warning.
    env.apply_policy(
        "rbac",
        json!({"serviceModel": "PaaS", "mode": "Audit", "admission": "Warn",
               "controls": {"rbac": {"clusterAdminSubjects": [{"kind": "Group", "name": "platform-admins"}]}}}),
    )
    .await;
    until_admitted("cluster-admin for zed in Warn mode", async || {
        dry_run_cluster::<ClusterRoleBinding>(&alice, &zed).await
    })
    .await;
    let deadline = Instant::now() + DEADLINE;
    let warned = loop {
        let out = cp
            .kubectl()
            .env("KUBECONFIG", &kubeconfig)
            .args([
                "create",
                "clusterrolebinding",
                &format!("x-{suffix}"),
                "--clusterrole=cluster-admin",
                "--user=zed",
                "--dry-run=server",
            ])
            .output()
            .expect("kubectl");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "Warn mode denied: {stderr}");
        if stderr.contains("Warning") || Instant::now() > deadline {
            break stderr;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        warned.contains("Warning") && warned.contains("IAM-01") && warned.contains(&policy),
        "{warned}"
    );
    // (The look-alike onus-iam-05-warn is not onus's: the warn policy for IAM-05 is refused
    // rather than taking it over, and the status does not claim it.)
    let rp = env
        .wait_status(&policy, "IAM-01 warned", |s| {
            s.controls
                .iter()
                .any(|c| c.id == "IAM-01" && c.admission == Some(AdmissionAction::Warn))
        })
        .await;
    let status = rp.status.expect("status");
    assert_eq!(control(&status, "IAM-05").admission, None);
    // ... and says so in status, as an Enforce policy would in Enforced (not only an Event).
    let rp = env
        .wait_status(&policy, "the refused IAM-05 warning in Warned", |s| {
            onus::status::condition(s, onus::status::WARNED).is_some_and(|c| {
                c.status == "False"
                    && c.reason == "RemediationFailed"
                    && c.message
                        .contains("IAM-05 admission (Warn) failed, reason NotOurs")
            })
        })
        .await;
    let status = rp.status.expect("status");
    assert!(onus::status::condition(&status, onus::status::ENFORCED).is_none());
    assert_eq!(
        generated_names(&admin).await,
        [
            "onus-dat-01-warn",
            "onus-iam-01-warn",
            "onus-iam-02-warn",
            "onus-iam-07-warn",
            "onus-net-05-warn",
            "onus-wkl-10-warn"
        ],
        "the Deny objects are gone, the look-alike onus-iam-05-warn is not taken over"
    );

    // Deleting the policy removes what onus generated, and only that.
    Api::<ResponsibilityPolicy>::all(admin.clone())
        .delete(&policy, &DeleteParams::default())
        .await
        .expect("delete policy");
    common::enforce::until("the generated objects removed", async || {
        generated_names(&admin).await.is_empty()
    })
    .await;
    let policies = Api::<ValidatingAdmissionPolicy>::all(admin.clone());
    for name in &lookalikes {
        assert!(
            policies.get_opt(name).await.expect("get").is_some(),
            "look-alike {name} removed"
        );
    }
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone());
    for name in admission::all_names() {
        assert!(
            bindings.get_opt(&name).await.expect("get").is_none(),
            "{name}"
        );
    }
    until_admitted(
        "cluster-admin for zed after the policy is gone",
        async || dry_run_cluster::<ClusterRoleBinding>(&alice, &zed).await,
    )
    .await;
    for name in &lookalikes {
        policies
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete look-alike");
    }
}

/// Applies what `generate` made for `spec` under a test's own names, bound only to objects
/// labelled `onus.dev/cel=<id>`, so nothing else on the control plane meets it.
async fn apply_for_test(client: &Client, id: &str, spec: Value) -> Vec<String> {
    let rp: ResponsibilityPolicy = serde_json::from_value(json!({
        "apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
        "metadata": {"name": format!("cel-{id}")},
        "spec": spec,
    }))
    .expect("policy");
    let now = jiff::Timestamp::now();
    let generated = admission::generate([&rp], now, None);
    let params = PatchParams::apply("onus-tests").force();
    let mut names = Vec::new();
    for Generated {
        mut policy,
        mut binding,
        ..
    } in generated.into_values()
    {
        let name = format!(
            "cel-{id}-{}",
            policy["metadata"]["name"].as_str().expect("name")
        );
        policy["metadata"]["name"] = name.clone().into();
        binding["metadata"]["name"] = name.clone().into();
        binding["spec"]["policyName"] = name.clone().into();
        binding["spec"]["matchResources"]["objectSelector"] =
            json!({"matchLabels": {"onus.dev/cel": id}});
        Api::<ValidatingAdmissionPolicy>::all(client.clone())
            .patch(&name, &params, &Patch::Apply(&policy))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}\n{policy:#}"));
        Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
            .patch(&name, &params, &Patch::Apply(&binding))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        names.push(name);
    }
    names
}

fn labelled(mut obj: Value, id: &str) -> Value {
    obj["metadata"]["labels"] = json!({"onus.dev/cel": id});
    obj
}

fn rules(rules: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
           "metadata": {"name": "r"}, "rules": rules})
}

/// Every generated expression, evaluated by the API server on an allowed and a denied object
/// (server-side dry runs).
#[tokio::test]
async fn each_generated_expression_admits_and_denies_on_the_api_server() {
    let _serial = SERIAL.lock().await;
    let cp = control_plane();
    common::install_crd(cp);
    let admin = cp.client().await;
    let id = onus_testenv::random_suffix()[..6].to_string();
    let tester = format!("bob-{id}");
    grant_cluster_admin(&admin, &tester, "User", &tester).await;
    grant_cluster_admin(
        &admin,
        &format!("platform-admins-{id}"),
        "Group",
        "platform-admins",
    )
    .await;
    let bob = cp.client_as(&tester, None).await;
    let platform = cp
        .client_as(&format!("carol-{id}"), Some("platform-admins"))
        .await;
    let governed = cp.namespace(&admin, "cel-gov", &[("team", "shop")]).await;
    let other = cp.namespace(&admin, "cel-other", &[("team", "lab")]).await;
    let excepted_ns = cp.namespace(&admin, "cel-exc", &[("team", "shop")]).await;
    let names = apply_for_test(
        &admin,
        &id,
        json!({"serviceModel": "PaaS", "mode": "Enforce",
               "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["shop"]}]},
               "controls": {"rbac": {"clusterAdminSubjects": [
                   {"kind": "Group", "name": "platform-admins"},
                   {"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"},
                   // User-controlled strings are CEL literals, never code: were either
                   // spliced in, every subject below would be admitted.
                   {"kind": "User", "name": "x\" || true || \""},
                   {"kind": "Group", "name": "x' || true || '\\\n\u{2028}]) || true || (["}]}},
               "exceptions": [
                   {"controls": ["IAM-07"], "namespaces": [excepted_ns], "reason": "public docs"},
                   {"controls": ["IAM-01"], "resources": [{"kind": "ClusterRoleBinding", "name": "break-glass"}],
                    "reason": "incident"},
                   {"controls": ["IAM-01"], "namespaces": [other], "reason": "expired",
                    "expires": "2020-01-01T00:00:00Z"},
                   {"controls": ["IAM-02"], "resources": [{"kind": "ClusterRole", "name": "star-verbs"}],
                    "reason": "only IAM-05 judges it"},
                   {"controls": ["IAM-05"], "resources": [{"kind": "ClusterRole", "name": "agg"}],
                    "reason": "only IAM-02 judges it"},
                   {"controls": ["IAM-07"], "resources": [{"kind": "RoleBinding", "name": "e\") || true || (\""}],
                    "reason": "\" || true || \"'"}]}),
    )
    .await;
    assert_eq!(names.len(), 7);
    let l = |v: Value| labelled(v, &id);

    // IAM-01: cluster-admin only for allow-listed subjects.
    let crb = |name: &str, subject: Value| l(cluster_admin_binding(name, subject));
    let refusal = until_refused("IAM-01 zed", async || {
        dry_run_cluster::<ClusterRoleBinding>(&bob, &crb("a", user("zed"))).await
    })
    .await;
    assert!(refusal.contains("IAM-01"), "{refusal}");
    for (what, subject) in [
        ("allow-listed group", group("platform-admins")),
        (
            "allow-listed ServiceAccount",
            json!({"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"}),
        ),
        (
            "allow-listed ServiceAccount as user",
            user("system:serviceaccount:ci:deployer"),
        ),
    ] {
        dry_run_cluster::<ClusterRoleBinding>(&bob, &crb("a", subject))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    for (what, subject) in [
        (
            "other ServiceAccount",
            json!({"kind": "ServiceAccount", "name": "deployer", "namespace": "prod"}),
        ),
        ("other group", group("ops")),
    ] {
        assert!(
            dry_run_cluster::<ClusterRoleBinding>(&bob, &crb("a", subject))
                .await
                .is_err(),
            "{what} admitted"
        );
    }
    dry_run_cluster::<ClusterRoleBinding>(&bob, &crb("break-glass", user("zed")))
        .await
        .expect("the exception's resource");
    let view = l(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "v"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [user("zed")],
    }));
    dry_run_cluster::<ClusterRoleBinding>(&bob, &view)
        .await
        .expect("another role");
    // admin and edit cluster-wide count as IAM-01 in status, so at admission too; in a
    // namespace they do not.
    for role in ["admin", "edit"] {
        let mut wide = crb("w", user("zed"));
        wide["roleRef"]["name"] = role.into();
        let refusal = dry_run_cluster::<ClusterRoleBinding>(&bob, &wide)
            .await
            .expect_err(role);
        assert!(refusal.contains("IAM-01"), "{refusal}");
        let mut bound = l(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "rb-admin"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [user("zed")],
        }));
        dry_run::<RoleBinding>(&bob, Some(&governed), &bound)
            .await
            .unwrap_or_else(|e| panic!("{role} in a namespace: {e}"));
        bound["roleRef"]["name"] = "cluster-admin".into();
        assert!(
            dry_run::<RoleBinding>(&bob, Some(&governed), &bound)
                .await
                .is_err()
        );
    }
    // Namespaced: governed namespaces only; the expired exception does not count.
    let rb = |subject: Value| {
        l(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "rb"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [subject],
        }))
    };
    assert!(
        dry_run::<RoleBinding>(&bob, Some(&governed), &rb(user("zed")))
            .await
            .is_err()
    );
    dry_run::<RoleBinding>(&bob, Some(&other), &rb(user("zed")))
        .await
        .expect("a namespace the policy does not select");
    dry_run::<RoleBinding>(&bob, Some("kube-system"), &rb(user("zed")))
        .await
        .expect("kube-system is excluded");

    // IAM-07: no bindings for anonymous or every-user groups (no allow-list).
    let everyone = |name: &str| {
        l(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "e"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [group(name)],
        }))
    };
    for g in [
        "system:authenticated",
        "system:unauthenticated",
        "system:anonymous",
    ] {
        // Each generated object is loaded by the API server on its own: wait for this one.
        let refusal = until_refused(g, async || {
            dry_run::<RoleBinding>(&bob, Some(&governed), &everyone(g)).await
        })
        .await;
        assert!(refusal.contains("IAM-07"), "{refusal}");
    }
    dry_run::<RoleBinding>(&bob, Some(&governed), &everyone("developers"))
        .await
        .expect("an ordinary group");
    dry_run::<RoleBinding>(&bob, Some(&excepted_ns), &everyone("system:authenticated"))
        .await
        .expect("the exception's namespace");

    // IAM-02: no wildcard rules; IAM-05: no escalation verbs (allow-listed requesters may).
    for (control, r) in [
        (
            "IAM-02",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}]),
        ),
        (
            "IAM-02",
            json!([{"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}]),
        ),
        (
            "IAM-02",
            json!([{"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}]),
        ),
        (
            "IAM-02",
            json!([{"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["update"]}]),
        ),
        (
            "IAM-05",
            json!([{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["escalate"]}]),
        ),
        (
            "IAM-05",
            json!([{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["bind"]}]),
        ),
        (
            "IAM-05",
            json!([{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]}]),
        ),
    ] {
        // Each generated object is loaded on its own: the first case of a control waits for it.
        let refusal = until_refused(control, async || {
            dry_run_cluster::<ClusterRole>(&bob, &l(rules(r.clone()))).await
        })
        .await;
        assert!(refusal.contains(control), "{refusal}");
        dry_run_cluster::<ClusterRole>(&platform, &l(rules(r)))
            .await
            .unwrap_or_else(|e| panic!("an allow-listed requester, {control}: {e}"));
    }
    // The verb `*` grants escalate, bind and impersonate (IAM-02 is excepted for this name).
    for r in [
        json!([{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["*"]}]),
        json!([{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["*"]}]),
    ] {
        let mut role = l(rules(r.clone()));
        role["metadata"]["name"] = "star-verbs".into();
        let refusal = dry_run_cluster::<ClusterRole>(&bob, &role)
            .await
            .expect_err("IAM-05 for verbs *");
        assert!(refusal.contains("IAM-05"), "{r}: {refusal}");
    }
    let fine =
        json!([{"apiGroups": [""], "resources": ["pods", "roles"], "verbs": ["get", "list"]}]);
    dry_run_cluster::<ClusterRole>(&bob, &l(rules(fine.clone())))
        .await
        .expect("explicit verbs");
    // An aggregating ClusterRole gets its rules from whatever its selectors match (here the
    // bootstrap roles, cluster-admin among them): denied by IAM-02 and IAM-05 whatever its own
    // rules say, unless the requester is allow-listed.
    let aggregating = |name: &str| {
        l(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                 "metadata": {"name": name},
                 "aggregationRule": {"clusterRoleSelectors": [
                     {"matchLabels": {"kubernetes.io/bootstrapping": "rbac-defaults"}}]}}),
        )
    };
    // A role without rules reaches CEL as `rules: null`: judged, not an evaluation error.
    let empty = l(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                         "metadata": {"name": "empty"}}),
    );
    dry_run_cluster::<ClusterRole>(&bob, &empty)
        .await
        .expect("a ClusterRole without rules");
    for rules in [Value::Null, json!([])] {
        let mut role = aggregating("agg");
        role["rules"] = rules;
        let refusal = dry_run_cluster::<ClusterRole>(&bob, &role)
            .await
            .expect_err("an aggregating ClusterRole");
        assert!(
            refusal.contains("403") && refusal.contains("IAM-02"),
            "{refusal}"
        );
    }
    // IAM-05 too (IAM-02 is excepted for this name; IAM-05 for "agg").
    let refusal = dry_run_cluster::<ClusterRole>(&bob, &aggregating("star-verbs"))
        .await
        .expect_err("an aggregating ClusterRole, IAM-05");
    assert!(refusal.contains("IAM-05"), "{refusal}");
    dry_run_cluster::<ClusterRole>(&platform, &aggregating("agg"))
        .await
        .expect("an allow-listed requester may aggregate");
    // One made by the exempt admin: relabelling it is admitted, changing its selectors not.
    let agg_name = format!("agg-{id}");
    create_as(
        &Api::<ClusterRole>::all(admin.clone()),
        aggregating(&agg_name),
    )
    .await;
    Api::<ClusterRole>::all(bob.clone())
        .patch(
            &agg_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"note": "kept"}}})),
        )
        .await
        .expect("an update that leaves rules and selectors alone");
    let widened = Api::<ClusterRole>::all(bob.clone())
        .patch(
            &agg_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"aggregationRule": {"clusterRoleSelectors": [
                {"matchLabels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
                {"matchLabels": {"team": "any"}}]}})),
        )
        .await;
    assert!(widened.is_err(), "an update of the selectors was admitted");
    Api::<ClusterRole>::all(admin.clone())
        .delete(&agg_name, &DeleteParams::default())
        .await
        .expect("delete");
    let mut role = l(rules(
        json!([{"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}]),
    ));
    role["kind"] = "Role".into();
    assert!(dry_run::<Role>(&bob, Some(&governed), &role).await.is_err());
    dry_run::<Role>(&bob, Some(&other), &role)
        .await
        .expect("a Role outside the governed namespaces");

    // NET-05: no Service externalIPs; an update that keeps them is admitted.
    let service = |ips: Value| {
        l(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                 "spec": {"ports": [{"port": 80}], "externalIPs": ips}}),
        )
    };
    let refusal = until_refused("NET-05 externalIPs", async || {
        dry_run::<Service>(&bob, Some(&governed), &service(json!(["203.0.113.7"]))).await
    })
    .await;
    assert!(refusal.contains("NET-05"), "{refusal}");
    dry_run::<Service>(&bob, Some(&governed), &service(json!([])))
        .await
        .expect("no externalIPs");
    dry_run::<Service>(&bob, Some(&other), &service(json!(["203.0.113.7"])))
        .await
        .expect("a namespace the policy does not select");

    // WKL-10: no workloads in default, when the policy governs it (this one does not).
    let deployment = |name: &str, labels: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": name, "labels": labels},
               "spec": {"selector": {"matchLabels": {"app": name}},
                        "template": {"metadata": {"labels": {"app": name}},
                                     "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    };
    dry_run::<Deployment>(
        &bob,
        Some("default"),
        &deployment("web", json!({"onus.dev/cel": id})),
    )
    .await
    .expect("default is not selected by this policy");
    let everywhere = format!("{id}-all");
    let more = apply_for_test(
        &admin,
        &everywhere,
        json!({"serviceModel": "PaaS", "mode": "Enforce"}),
    )
    .await;
    let in_default = deployment("web", json!({"onus.dev/cel": everywhere}));
    let refusal = until_refused("WKL-10 in default", async || {
        dry_run::<Deployment>(&bob, Some("default"), &in_default).await
    })
    .await;
    assert!(refusal.contains("WKL-10"), "{refusal}");
    dry_run::<Deployment>(&bob, Some(&governed), &in_default)
        .await
        .expect("a workload outside default");
    // A kubelet's mirror Pod of a static Pod in default is admitted (its static Pod runs
    // anyway); anyone else's Pod there, with the annotation or not, is denied, and so is a
    // node's Pod that is no mirror.
    let node_user = format!("system:node:n1-{id}");
    grant_cluster_admin(&admin, &format!("node-{id}"), "User", &node_user).await;
    let node = cp.client_as(&node_user, Some("system:nodes")).await;
    let pod = |mirror: bool| {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "static-web", "labels": {"onus.dev/cel": everywhere}},
               "spec": {"nodeName": format!("n1-{id}"),
                        "containers": [{"name": "c", "image": "nginx"}]}});
        if mirror {
            pod["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "0123abcd"});
        }
        pod
    };
    dry_run::<Pod>(&node, Some("default"), &pod(true))
        .await
        .expect("a kubelet's mirror Pod");
    for (what, client, mirror) in [
        ("a node's Pod that is no mirror", &node, false),
        ("a user's Pod with the mirror annotation", &bob, true),
    ] {
        let refusal = dry_run::<Pod>(client, Some("default"), &pod(mirror))
            .await
            .expect_err(what);
        assert!(refusal.contains("WKL-10"), "{what}: {refusal}");
    }

    // An object already in violation (made by the exempt admin) can still be relabelled.
    let existing = crb(&format!("existing-{id}"), user("zed"));
    let api = Api::<ClusterRoleBinding>::all(admin.clone());
    create_as(&api, existing.clone()).await;
    let name = format!("existing-{id}");
    Api::<ClusterRoleBinding>::all(bob.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"note": "kept"}}})),
        )
        .await
        .expect("an update that leaves the subjects alone");
    let refused = Api::<ClusterRoleBinding>::all(bob.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"subjects": [user("zed"), user("mallory")]})),
        )
        .await;
    assert!(refused.is_err(), "an update adding a subject was admitted");
    api.delete(&name, &DeleteParams::default())
        .await
        .expect("delete");

    for name in names.into_iter().chain(more) {
        Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone())
            .delete(&name, &DeleteParams::default())
            .await
            .expect("delete binding");
        Api::<ValidatingAdmissionPolicy>::all(admin.clone())
            .delete(&name, &DeleteParams::default())
            .await
            .expect("delete policy");
    }
    kubectl_ok(
        cp,
        &[
            "delete",
            "namespace",
            &governed,
            &other,
            &excepted_ns,
            "--wait=false",
        ],
    );
}

/// A policy whose spec turned invalid keeps enforcing its last valid spec, at admission too;
/// an exception of that held spec stops admitting when it expires, not at the next resync
/// (minutes later). Nothing else changes meanwhile, so only the expiry can wake onus.
#[tokio::test]
async fn an_invalid_policy_stops_admitting_at_its_held_exceptions_expiry() {
    let _serial = SERIAL.lock().await;
    let suffix = &onus_testenv::random_suffix()[..6];
    let operator_user = format!("onus-operator-{suffix}");
    let cp = control_plane();
    let admin = cp.client().await;
    grant_cluster_admin(&admin, &operator_user, "User", &operator_user).await;
    let env = TestEnv::start_admission("held-expiry", Some(&operator_user)).await;
    let tester = format!("erin-{suffix}");
    grant_cluster_admin(&admin, &tester, "User", &tester).await;
    let erin = cp.client_as(&tester, None).await;
    let break_glass = format!("break-glass-{suffix}");
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(20);
    let exception = json!({"controls": ["IAM-01"], "reason": "incident access",
                           "expires": expires.to_string(),
                           "resources": [{"kind": "ClusterRoleBinding", "name": break_glass}]});
    let policy = env
        .apply_policy(
            "held",
            json!({"serviceModel": "PaaS", "mode": "Enforce", "exceptions": [exception]}),
        )
        .await;
    let excepted = cluster_admin_binding(&break_glass, user("zed"));
    let zed = cluster_admin_binding(&format!("x-{suffix}"), user("zed"));
    until_refused("cluster-admin for zed", async || {
        dry_run_cluster::<ClusterRoleBinding>(&erin, &zed).await
    })
    .await;
    dry_run_cluster::<ClusterRoleBinding>(&erin, &excepted)
        .await
        .expect("the exception's object is admitted while it lasts");
    // Invalid now (a family in Enforce under an Audit policy): the valid spec above is held,
    // its exception with it.
    env.apply_policy(
        "held",
        json!({"serviceModel": "PaaS", "mode": "Audit", "controls": {"rbac": {"mode": "Enforce"}},
               "exceptions": [exception]}),
    )
    .await;
    env.wait_status(&policy, "InvalidSpec", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == "InvalidSpec")
    })
    .await;
    dry_run_cluster::<ClusterRoleBinding>(&erin, &excepted)
        .await
        .expect("the held exception still admits before its expiry");
    let wait = expires
        .duration_since(jiff::Timestamp::now())
        .unsigned_abs();
    tokio::time::sleep(wait).await;
    let refusal = until_refused("the expired exception's object", async || {
        dry_run_cluster::<ClusterRoleBinding>(&erin, &excepted).await
    })
    .await;
    assert!(refusal.contains("IAM-01"), "{refusal}");

    Api::<ResponsibilityPolicy>::all(admin.clone())
        .delete(&policy, &DeleteParams::default())
        .await
        .expect("delete policy");
    common::enforce::until("the generated objects removed", async || {
        generated_names(&admin).await.is_empty()
    })
    .await;
    // Gone from the API server's admission too, before the next test runs.
    until_admitted(
        "cluster-admin for zed after the policy is gone",
        async || dry_run_cluster::<ClusterRoleBinding>(&erin, &zed).await,
    )
    .await;
}

/// IAM-02 through aggregation: an aggregating ClusterRole is denied at admission by what onus
/// generated, and one the exempt admin makes is detected once the controller-manager has
/// aggregated cluster-admin's rules into it. Then an allow-list too long for a CEL expression:
/// onus writes nothing for it, keeps the stricter ValidatingAdmissionPolicy in place, and says
/// so (status naming the control and the reason, a Warning Event, a metric).
#[tokio::test]
async fn aggregation_is_denied_and_detected_and_a_too_large_policy_fails_visibly() {
    let _serial = SERIAL.lock().await;
    let suffix = &onus_testenv::random_suffix()[..6];
    let operator_user = format!("onus-operator-{suffix}");
    let cp = control_plane();
    let admin = cp.client().await;
    grant_cluster_admin(&admin, &operator_user, "User", &operator_user).await;
    let env = TestEnv::start_admission("aggregate", Some(&operator_user)).await;
    let tester = format!("frank-{suffix}");
    grant_cluster_admin(&admin, &tester, "User", &tester).await;
    let frank = cp.client_as(&tester, None).await;
    let spec = |subjects: Vec<Value>| {
        json!({"serviceModel": "PaaS", "mode": "Enforce",
               "controls": {"rbac": {"clusterAdminSubjects": subjects}}})
    };
    let policy = env
        .apply_policy(
            "agg",
            spec(vec![json!({"kind": "Group", "name": "platform-admins"})]),
        )
        .await;
    let aggregating = |name: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": name},
               "aggregationRule": {"clusterRoleSelectors": [
                   {"matchLabels": {"kubernetes.io/bootstrapping": "rbac-defaults"}}]}})
    };
    let refusal = until_refused("an aggregating ClusterRole", async || {
        dry_run_cluster::<ClusterRole>(&frank, &aggregating("agg")).await
    })
    .await;
    // Denied by IAM-02 and IAM-05 both; the API server names the first it evaluates.
    assert!(
        refusal.contains("403")
            && (refusal.contains("IAM-02") || refusal.contains("IAM-05"))
            && refusal.contains(&policy),
        "{refusal}"
    );

    // Detection: made by the exempt admin and bound, its aggregated rules are reported.
    let role = format!("aggregated-{suffix}");
    let roles = Api::<ClusterRole>::all(admin.clone());
    create_as(&roles, aggregating(&role)).await;
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [user("zed")],
    });
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(binding).expect("binding"),
        )
        .await
        .expect("bind as admin");
    common::enforce::until("the controller-manager aggregates", async || {
        roles
            .get(&role)
            .await
            .expect("role")
            .rules
            .unwrap_or_default()
            .iter()
            .any(|r| r.verbs.iter().any(|v| v == "*"))
    })
    .await;
    env.wait_status(&policy, "IAM-02 reports the aggregated role", |s| {
        s.controls.iter().any(|c| {
            c.id == "IAM-02" && c.violations > 0 && c.examples.iter().any(|e| e.contains(&role))
        })
    })
    .await;

    // Too large: 10,000 allow-listed groups make IAM-01's check (and IAM-02's, IAM-05's)
    // longer than the API server accepts.
    let many: Vec<Value> = (0..10_000)
        .map(|i| json!({"kind": "Group", "name": format!("team-{i:05}")}))
        .collect();
    env.apply_policy("agg", spec(many.clone())).await;
    let rp = env
        .wait_status(&policy, "TooLarge reported", |s| {
            onus::status::condition(s, onus::status::ENFORCED).is_some_and(|c| {
                c.message
                    .contains("IAM-01 admission (Deny) failed, reason TooLarge")
            })
        })
        .await;
    let status = rp.status.expect("status");
    for id in ["IAM-01", "IAM-02", "IAM-05"] {
        assert_eq!(control(&status, id).admission, None, "{id} claimed");
    }
    assert_eq!(
        control(&status, "IAM-07").admission,
        Some(AdmissionAction::Deny)
    );
    // The stricter policy stays: a listed group is still denied, zed too.
    let listed = cluster_admin_binding(&format!("t-{suffix}"), group("team-00042"));
    let refusal = dry_run_cluster::<ClusterRoleBinding>(&frank, &listed)
        .await
        .expect_err("the previous (stricter) policy was not kept");
    assert!(refusal.contains("IAM-01"), "{refusal}");
    common::enforce::until("a Warning Event on the policy", async || {
        Api::<Event>::all(admin.clone())
            .list(&ListParams::default().fields(&format!("regarding.name={policy}")))
            .await
            .expect("events")
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("AdmissionPolicyFailed")
                    && e.type_.as_deref() == Some("Warning")
                    && e.note.as_deref().is_some_and(|n| n.contains("TooLarge"))
            })
    })
    .await;
    assert!(
        env.metrics
            .render()
            .contains("onus_remediation_failures_total{kind=\"ValidatingAdmissionPolicy\"}"),
        "{}",
        env.metrics.render()
    );
    // The same list in Audit with `admission: Warn`: the warnings are too large too, and the
    // status says so in Warned, the way Enforced said it.
    env.apply_policy(
        "agg",
        json!({"serviceModel": "PaaS", "admission": "Warn",
               "controls": {"rbac": {"clusterAdminSubjects": many}}}),
    )
    .await;
    let rp = env
        .wait_status(&policy, "TooLarge warning reported", |s| {
            onus::status::condition(s, onus::status::WARNED).is_some_and(|c| {
                c.status == "False"
                    && c.reason == "RemediationFailed"
                    && c.message
                        .contains("IAM-01 admission (Warn) failed, reason TooLarge")
            })
        })
        .await;
    let status = rp.status.expect("status");
    assert!(onus::status::condition(&status, onus::status::ENFORCED).is_none());
    for id in ["IAM-01", "IAM-02", "IAM-05"] {
        assert_eq!(control(&status, id).admission, None, "{id} claimed");
    }
    assert_eq!(
        control(&status, "IAM-07").admission,
        Some(AdmissionAction::Warn)
    );

    Api::<ClusterRoleBinding>::all(admin.clone())
        .delete(&role, &DeleteParams::default())
        .await
        .expect("delete binding");
    roles
        .delete(&role, &DeleteParams::default())
        .await
        .expect("delete role");
    Api::<ResponsibilityPolicy>::all(admin.clone())
        .delete(&policy, &DeleteParams::default())
        .await
        .expect("delete policy");
    common::enforce::until("the generated objects removed", async || {
        generated_names(&admin).await.is_empty()
    })
    .await;
    let zed = cluster_admin_binding(&format!("x-{suffix}"), user("zed"));
    until_admitted(
        "cluster-admin for zed after the policy is gone",
        async || dry_run_cluster::<ClusterRoleBinding>(&frank, &zed).await,
    )
    .await;
}

/// Waits until the generated objects are gone, then until the API server's admission has
/// dropped them too (it reloads its policies about every second): the next test, whose onus
/// writes objects of the same names, must not meet these.
async fn all_removed(admin: &Client) {
    within(
        Duration::from_secs(30),
        "generated objects removed",
        async || generated_names(admin).await.is_empty(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// IAM-01 prevented at admission, as the status says.
fn iam01_prevented(s: &onus::crd::ResponsibilityPolicyStatus) -> bool {
    s.controls
        .iter()
        .any(|c| c.id == "IAM-01" && c.admission == Some(AdmissionAction::Deny))
}

/// Weakens IAM-01's generated policy (its failures ignored) unless it already is, as another
/// controller fighting onus over it would; whether it did.
async fn weaken_iam01(policies: &Api<ValidatingAdmissionPolicy>) -> bool {
    let name = "onus-iam-01";
    let spec = policies.get(name).await.expect("get").spec.expect("spec");
    if spec.failure_policy == Some("Ignore".to_string()) {
        return false;
    }
    policies
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"failurePolicy": "Ignore"}})),
        )
        .await
        .expect("weaken");
    true
}

/// The status's `Enforced` is False and its message says `text`.
fn enforced_false_says(s: &onus::crd::ResponsibilityPolicyStatus, text: &str) -> bool {
    onus::status::condition(s, onus::status::ENFORCED)
        .is_some_and(|c| c.status == "False" && c.message.contains(text))
}

/// An operator (its own identity, cluster-admin by RBAC) with an Enforce policy `name` whose
/// IAM-01 is prevented: (operator, its user, the policy, a suffix for this test's names).
async fn enforcing(name: &str) -> (TestEnv, String, String, String) {
    let suffix = onus_testenv::random_suffix()[..6].to_string();
    let operator_user = format!("onus-operator-{suffix}");
    let admin = control_plane().client().await;
    grant_cluster_admin(&admin, &operator_user, "User", &operator_user).await;
    let env = TestEnv::start_admission(name, Some(&operator_user)).await;
    let policy = env
        .apply_policy(name, json!({"serviceModel": "PaaS", "mode": "Enforce"}))
        .await;
    env.wait_status(&policy, "IAM-01 prevented", iam01_prevented)
        .await;
    (env, operator_user, policy, suffix)
}

/// Waits up to `within` for `done`, polling; the time it took.
async fn within(within: Duration, what: &str, done: impl AsyncFn() -> bool) -> Duration {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

/// A generated object that someone else deletes or edits is put back at once (the leader
/// watches them), not by the repair pass five minutes later: each step waits 15 s at most, and
/// the audit log shows onus's identity writing it back. One relabelled (no longer onus's) is
/// not taken back, and the status says at once that the control is no longer prevented; once
/// it is gone, the retry writes onus's again.
#[tokio::test]
async fn a_generated_object_changed_by_someone_else_is_put_back_at_once() {
    let _serial = SERIAL.lock().await;
    let (env, operator_user, policy, _) = enforcing("repair").await;
    let cp = control_plane();
    let admin = cp.client().await;
    let prevented = iam01_prevented;
    let policies = Api::<ValidatingAdmissionPolicy>::all(admin.clone());
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone());
    let name = "onus-iam-01";
    const QUICK: Duration = Duration::from_secs(15);
    let written_back = |resource: &'static str, since: jiff::Timestamp| {
        let user = operator_user.clone();
        move || {
            cp.audit_events().into_iter().any(|e| {
                e.user == user
                    && e.resource == resource
                    && e.name == name
                    && e.verb == "patch"
                    && e.received >= since
                    && e.code.is_some_and(|c| (200..300).contains(&c))
            })
        }
    };

    // Deleted: back, onus's, with a write by onus in the audit log.
    let since = jiff::Timestamp::now();
    bindings
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete binding");
    let took = within(QUICK, "the deleted binding back", async || {
        bindings.get_opt(name).await.expect("get").is_some_and(|b| {
            b.metadata
                .labels
                .unwrap_or_default()
                .contains_key("app.kubernetes.io/managed-by")
        })
    })
    .await;
    let by_onus = written_back("validatingadmissionpolicybindings", since);
    within(
        QUICK,
        "onus's write of the binding in the audit log",
        async || by_onus(),
    )
    .await;
    eprintln!("deleted binding back in {took:?}");

    // Edited (weakened: failures ignored, the check made to admit everything): put back.
    let since = jiff::Timestamp::now();
    let wanted = policies.get(name).await.expect("get").spec.expect("spec");
    policies
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"failurePolicy": "Ignore",
                                          "validations": [{"expression": "true"}]}})),
        )
        .await
        .expect("weaken");
    within(QUICK, "the weakened policy put back", async || {
        let now = policies.get(name).await.expect("get").spec.expect("spec");
        now.failure_policy == wanted.failure_policy && now.validations == wanted.validations
    })
    .await;
    let by_onus = written_back("validatingadmissionpolicies", since);
    within(
        QUICK,
        "onus's write of the policy in the audit log",
        async || by_onus(),
    )
    .await;
    // Added next to onus's fields by another field manager (server-side apply keeps both): a
    // match condition that never matches switches the policy off; it goes.
    policies
        .patch(
            name,
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": name},
                "spec": {"matchConditions": [{"name": "bypass", "expression": "false"}]},
            })),
        )
        .await
        .expect("add a match condition");
    within(QUICK, "the never-matching condition removed", async || {
        let now = policies.get(name).await.expect("get").spec.expect("spec");
        now.match_conditions == wanted.match_conditions
    })
    .await;
    bindings
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"validationActions": ["Audit"]}})),
        )
        .await
        .expect("weaken binding");
    within(QUICK, "the binding denying again", async || {
        let spec = bindings.get(name).await.expect("get").spec;
        spec.validation_actions == ["Deny"]
    })
    .await;

    // Relabelled: no longer onus's, so not taken back; the status says so at once.
    bindings
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}})),
        )
        .await
        .expect("relabel");
    let start = Instant::now();
    env.wait_status(&policy, "IAM-01 no longer prevented", |s| !prevented(s))
        .await;
    assert!(start.elapsed() < QUICK, "status took {:?}", start.elapsed());
    // The changes above came seconds apart, so onus's repairs are paced by now (each waits
    // twice as long as the last, up to a minute): until the paced repair finds the binding
    // relabelled, the status says the control is contested; then the refusal.
    let rps = Api::<ResponsibilityPolicy>::all(admin.clone());
    let not_ours = |s: &onus::crd::ResponsibilityPolicyStatus| {
        !prevented(s)
            && onus::status::condition(s, onus::status::ENFORCED)
                .is_some_and(|c| c.message.contains("reason NotOurs"))
    };
    within(
        Duration::from_secs(75),
        "the refusal NotOurs in the status",
        async || {
            rps.get(&policy)
                .await
                .expect("policy")
                .status
                .is_some_and(|s| not_ours(&s))
        },
    )
    .await;
    let rp = rps.get(&policy).await.expect("policy");
    let enforced = rp
        .status
        .as_ref()
        .and_then(|s| onus::status::condition(s, onus::status::ENFORCED))
        .expect("Enforced");
    assert_eq!(enforced.status, "False", "{enforced:?}");
    assert!(
        enforced
            .message
            .contains("IAM-01 admission (Deny) failed, reason NotOurs"),
        "{enforced:?}"
    );
    // Gone: the retry (every 5 s at first) writes onus's again, and the status follows.
    bindings
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete the relabelled binding");
    env.wait_status(&policy, "IAM-01 prevented again", prevented)
        .await;
    assert!(
        bindings
            .get(name)
            .await
            .expect("get")
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key("app.kubernetes.io/managed-by")
    );

    // Removed with the policy, as before.
    Api::<ResponsibilityPolicy>::all(admin.clone())
        .delete(&policy, &DeleteParams::default())
        .await
        .expect("delete policy");
    all_removed(&admin).await;
}

/// A field someone else adds to a generated object, one onus does not set itself, is removed:
/// a forced apply takes back only the fields onus sets, so an added `matchConditions` entry that
/// is always false (the policy then matches nothing) would stay while the status says the
/// control is prevented. (`matchConstraints` and a binding's `matchResources` are atomic: the
/// forced apply replaces them whole.) Put back within 15 s, and the denial holds again.
#[tokio::test]
async fn a_field_someone_else_adds_to_a_generated_object_is_removed() {
    let _serial = SERIAL.lock().await;
    let (_env, _, policy, suffix) = enforcing("added").await;
    let cp = control_plane();
    let admin = cp.client().await;
    let tester = format!("alice-{suffix}");
    grant_cluster_admin(&admin, &tester, "User", &tester).await;
    let alice = cp.client_as(&tester, None).await;
    let zed = cluster_admin_binding(&format!("x-{suffix}"), user("zed"));
    until_refused("cluster-admin for zed", async || {
        dry_run_cluster::<ClusterRoleBinding>(&alice, &zed).await
    })
    .await;
    let policies = Api::<ValidatingAdmissionPolicy>::all(admin.clone());
    let name = "onus-iam-01";
    const QUICK: Duration = Duration::from_secs(15);
    let someone_else = PatchParams::apply("someone-else");

    // A matchCondition that is always false: the policy would match no request.
    policies
        .patch(
            name,
            &someone_else,
            &Patch::Apply(json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": name},
                "spec": {"matchConditions": [{"name": "bypass", "expression": "false"}]},
            })),
        )
        .await
        .expect("add a matchCondition");
    within(QUICK, "the added matchCondition removed", async || {
        let spec = policies.get(name).await.expect("get").spec.expect("spec");
        let conditions = spec.match_conditions.unwrap_or_default();
        !conditions.is_empty() && conditions.iter().all(|c| c.name != "bypass")
    })
    .await;
    until_refused("cluster-admin for zed, the policy put back", async || {
        dry_run_cluster::<ClusterRoleBinding>(&alice, &zed).await
    })
    .await;

    Api::<ResponsibilityPolicy>::all(admin.clone())
        .delete(&policy, &DeleteParams::default())
        .await
        .expect("delete policy");
    all_removed(&admin).await;
}

/// A write of a generated policy's status (the API server's type checking does one after every
/// change of its spec: kube-controller-manager's validatingadmissionpolicy-status-controller,
/// which the test environment does not run, so the test writes it as that controller would) is
/// nobody's edit: onus writes nothing for it (3 s, per the audit log). A change of the spec
/// right after is still put back at once, so the watch was live.
#[tokio::test]
async fn a_status_write_is_not_taken_for_someone_elses_change() {
    let _serial = SERIAL.lock().await;
    let (_env, operator_user, policy, _) = enforcing("status").await;
    let cp = control_plane();
    let admin = cp.client().await;
    let policies = Api::<ValidatingAdmissionPolicy>::all(admin.clone());
    let name = "onus-iam-01";
    let onus_writes = |since: jiff::Timestamp| {
        cp.audit_events()
            .into_iter()
            .filter(|e| {
                e.user == operator_user
                    && e.resource == "validatingadmissionpolicies"
                    && e.name == name
                    && e.received >= since
            })
            .count()
    };

    let since = jiff::Timestamp::now();
    let before = policies.get(name).await.expect("get");
    let generation = before.metadata.generation.expect("generation");
    let after = policies
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": generation,
                                            "typeChecking": {"expressionWarnings": []}}})),
        )
        .await
        .expect("status");
    assert_ne!(
        before.metadata.resource_version, after.metadata.resource_version,
        "the status write changed nothing"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(onus_writes(since), 0, "onus wrote after a status write");

    let wanted = after.spec.expect("spec");
    policies
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"failurePolicy": "Ignore"}})),
        )
        .await
        .expect("weaken");
    within(
        Duration::from_secs(15),
        "the weakened policy put back",
        async || {
            let now = policies.get(name).await.expect("get").spec.expect("spec");
            now.failure_policy == wanted.failure_policy
        },
    )
    .await;

    Api::<ResponsibilityPolicy>::all(admin.clone())
        .delete(&policy, &DeleteParams::default())
        .await
        .expect("delete policy");
    all_removed(&admin).await;
}

/// Another writer that weakens a generated policy again each time onus puts it back (a
/// controller fighting onus over it) does not get onus into a tight loop of writes: over 4 s
/// of that, onus writes the policy a handful of times (each repair waits twice as long as the
/// last), not once per round. Once the other writer stops, the policy is put back.
#[tokio::test]
async fn a_writer_fighting_onus_over_a_generated_object_gets_no_tight_loop() {
    let _serial = SERIAL.lock().await;
    let (_env, operator_user, policy, _) = enforcing("fight").await;
    let cp = control_plane();
    let admin = cp.client().await;
    let policies = Api::<ValidatingAdmissionPolicy>::all(admin.clone());
    let name = "onus-iam-01";

    let since = jiff::Timestamp::now();
    let start = Instant::now();
    let mut rounds = 0;
    while start.elapsed() < Duration::from_secs(4) {
        if weaken_iam01(&policies).await {
            rounds += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let onus_writes = cp
        .audit_events()
        .into_iter()
        .filter(|e| {
            e.user == operator_user
                && e.resource == "validatingadmissionpolicies"
                && e.name == name
                && e.verb == "patch"
                && e.received >= since
        })
        .count();
    eprintln!("fought {rounds} rounds; onus wrote the policy {onus_writes} times in 4 s");
    assert!(
        rounds >= 2,
        "onus never put it back while fought over ({rounds} rounds)"
    );
    assert!(
        onus_writes <= 6,
        "onus wrote the policy {onus_writes} times in 4 s of a fight ({rounds} rounds)"
    );
    within(
        Duration::from_secs(15),
        "the policy put back after the fight",
        async || {
            let spec = policies.get(name).await.expect("get").spec.expect("spec");
            spec.failure_policy == Some("Fail".to_string())
        },
    )
    .await;

    Api::<ResponsibilityPolicy>::all(admin.clone())
        .delete(&policy, &DeleteParams::default())
        .await
        .expect("delete policy");
    all_removed(&admin).await;
}

/// While onus waits to put back a generated object someone keeps weakening (its repairs are
/// paced, see above), the status does not claim that control as prevented, and says why, at
/// once rather than after the wait; once onus has put it back, it claims it again.
#[tokio::test]
async fn a_contested_generated_object_is_not_claimed_as_prevented_while_onus_waits() {
    let _serial = SERIAL.lock().await;
    let (env, _, policy, _) = enforcing("contest").await;
    let admin = control_plane().client().await;
    let policies = Api::<ValidatingAdmissionPolicy>::all(admin.clone());
    let rps = Api::<ResponsibilityPolicy>::all(admin.clone());
    let name = "onus-iam-01";
    let says_contested = |s: &onus::crd::ResponsibilityPolicyStatus| {
        enforced_false_says(s, "IAM-01 admission (Deny) changed by someone else")
    };

    // Weakened again each time onus puts it back: the second repair already waits.
    let start = Instant::now();
    let mut contested = None;
    while contested.is_none() && start.elapsed() < Duration::from_secs(10) {
        weaken_iam01(&policies).await;
        let status = rps.get(&policy).await.expect("policy").status;
        contested = status.filter(says_contested);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = contested.expect("the status never said the control was contested");
    assert!(
        !iam01_prevented(&status),
        "IAM-01 claimed as prevented while its policy was weakened: {:?}",
        status.controls
    );

    // Left alone: put back, and claimed again.
    within(Duration::from_secs(15), "the policy put back", async || {
        let spec = policies.get(name).await.expect("get").spec.expect("spec");
        spec.failure_policy == Some("Fail".to_string())
    })
    .await;
    env.wait_status(&policy, "IAM-01 prevented again", |s| {
        iam01_prevented(s) && !says_contested(s)
    })
    .await;

    rps.delete(&policy, &DeleteParams::default())
        .await
        .expect("delete policy");
    all_removed(&admin).await;
}

/// A generated object changed while onus waits to put back another one (its repairs are paced)
/// is not claimed as prevented either, at once rather than when that wait ends: the watch is
/// read during the wait. Both are put back afterwards.
#[tokio::test]
async fn an_object_changed_during_a_paced_wait_is_not_claimed_as_prevented() {
    let _serial = SERIAL.lock().await;
    let (env, _, policy, _) = enforcing("contest-other").await;
    let admin = control_plane().client().await;
    let policies = Api::<ValidatingAdmissionPolicy>::all(admin.clone());
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone());
    let rps = Api::<ResponsibilityPolicy>::all(admin.clone());
    let iam07_prevented = |s: &onus::crd::ResponsibilityPolicyStatus| {
        s.controls
            .iter()
            .any(|c| c.id == "IAM-07" && c.admission == Some(AdmissionAction::Deny))
    };
    env.wait_status(&policy, "IAM-07 prevented", iam07_prevented)
        .await;

    // IAM-01's policy weakened each time onus puts it back, until its repair waits 4 s.
    let start = Instant::now();
    let mut long_wait = false;
    while !long_wait {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "onus's repair never waited 4 s"
        );
        weaken_iam01(&policies).await;
        let status = rps.get(&policy).await.expect("policy").status;
        long_wait = status.is_some_and(|s| {
            enforced_false_says(&s, "IAM-01 admission (Deny) changed by someone else")
                && enforced_false_says(&s, "puts it back in 4 s")
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // During that wait, IAM-07's binding is deleted: said at once, not after the wait.
    bindings
        .delete("onus-iam-07", &DeleteParams::default())
        .await
        .expect("delete IAM-07's binding");
    let deleted = Instant::now();
    within(
        Duration::from_secs(2),
        "IAM-07 no longer claimed as prevented during the wait",
        async || {
            rps.get(&policy)
                .await
                .expect("policy")
                .status
                .is_some_and(|s| {
                    !iam07_prevented(&s)
                        && enforced_false_says(
                            &s,
                            "IAM-07 admission (Deny) changed by someone else",
                        )
                })
        },
    )
    .await;
    eprintln!(
        "IAM-07 not claimed {:?} after its binding was deleted",
        deleted.elapsed()
    );

    // Left alone: both put back, and claimed again.
    within(
        Duration::from_secs(15),
        "IAM-07's binding put back",
        async || {
            bindings
                .get_opt("onus-iam-07")
                .await
                .expect("get")
                .is_some()
        },
    )
    .await;
    env.wait_status(&policy, "IAM-01 and IAM-07 prevented again", |s| {
        iam01_prevented(s)
            && iam07_prevented(s)
            && !enforced_false_says(s, "changed by someone else")
    })
    .await;

    rps.delete(&policy, &DeleteParams::default())
        .await
        .expect("delete policy");
    all_removed(&admin).await;
}

/// onus writes only over what it read: a look-alike created between its read and its write is
/// not overwritten, an object of onus's changed in between is not overwritten blindly (the
/// pass reads again), and one taken over in between (label removed) is not deleted.
/// Deterministic: the test makes the change between onus's read and its write.
#[tokio::test]
async fn a_write_never_overwrites_or_deletes_what_changed_since_it_was_read() {
    use onus::controller::prevent;
    let cp = control_plane();
    let admin = cp.client().await;
    let id = onus_testenv::random_suffix()[..6].to_string();
    let rp: ResponsibilityPolicy = serde_json::from_value(json!({
        "apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
        "metadata": {"name": format!("race-{id}")},
        "spec": {"serviceModel": "PaaS", "mode": "Enforce"},
    }))
    .expect("policy");
    let mut g = admission::generate([&rp], jiff::Timestamp::now(), None)
        .remove("onus-iam-07")
        .expect("IAM-07");
    // Under a test's own name, bound to nothing else on the control plane.
    let name = format!("race-{id}");
    g.policy["metadata"]["name"] = name.clone().into();
    g.binding["metadata"]["name"] = name.clone().into();
    g.binding["spec"]["policyName"] = name.clone().into();
    g.binding["spec"]["matchResources"]["objectSelector"] =
        json!({"matchLabels": {"onus.dev/race": id}});
    let api = Api::<ValidatingAdmissionPolicy>::all(admin.clone());
    const KIND: &str = "ValidatingAdmissionPolicy";

    // 1. Absent when read; a look-alike (no label) appears before the write.
    let read = prevent::observe(&api, KIND, &name).await.expect("read");
    assert!(read.is_none());
    let look_alike = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE"], "resources": ["configmaps"]}]},
            "validations": [{"expression": "true"}],
        },
    });
    api.patch(
        &name,
        &PatchParams::apply("someone-else").force(),
        &Patch::Apply(&look_alike),
    )
    .await
    .expect("look-alike");
    let refused = prevent::write(&api, KIND, &name, &g.policy, read.as_ref())
        .await
        .expect_err("a look-alike created meanwhile was overwritten");
    assert_eq!(refused.reason, "Conflict", "{refused:?}");
    let refused = prevent::apply(&admin, &name, &g)
        .await
        .expect_err("a look-alike was taken over");
    assert_eq!(refused.reason, "NotOurs", "{refused:?}");
    let kept = api.get(&name).await.expect("look-alike");
    assert!(kept.metadata.labels.unwrap_or_default().is_empty());
    assert_eq!(
        kept.spec.expect("spec").validations.expect("validations")[0].expression,
        "true"
    );
    api.delete(&name, &DeleteParams::default())
        .await
        .expect("delete look-alike");

    // 2. onus's when read; weakened by someone else before the write.
    prevent::apply(&admin, &name, &g)
        .await
        .expect("created")
        .0
        .expect("a change");
    let read = prevent::observe(&api, KIND, &name).await.expect("read");
    assert!(read.is_some());
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"validations": [{"expression": "true"}]}})),
    )
    .await
    .expect("weaken");
    let refused = prevent::write(&api, KIND, &name, &g.policy, read.as_ref())
        .await
        .expect_err("written over a change it never read");
    assert_eq!(refused.reason, "Conflict", "{refused:?}");
    // A pass reads again and puts the generated checks back.
    prevent::apply(&admin, &name, &g).await.expect("repaired");
    let repaired = api.get(&name).await.expect("get");
    assert_eq!(
        serde_json::to_value(repaired.spec.expect("spec").validations).expect("json"),
        g.policy["spec"]["validations"]
    );

    // 3. onus's when read; taken over (label removed) before the delete: left alone.
    let read = api.get(&name).await.expect("get");
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}})),
    )
    .await
    .expect("take over");
    prevent::delete(&api, &name, &read.metadata)
        .await
        .expect_err("deleted an object changed since it was read");
    assert!(api.get_opt(&name).await.expect("get").is_some());

    api.delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete binding");
}

/// A server-side dry-run create of any object in `ns` (its kind's plural guessed from the kind,
/// as for every kind used here): Ok or the refusal's message.
/// Creates `obj` (JSON of `K`) through `api`, as its client's user (the exempt admin, where
/// a test needs an object already in violation).
async fn create_as<K>(api: &Api<K>, obj: Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let typed: K = serde_json::from_value(obj).expect("the object's JSON");
    api.create(&PostParams::default(), &typed)
        .await
        .expect("create as admin")
}

async fn dry_run_object(client: &Client, ns: &str, obj: &Value) -> Result<(), String> {
    let api_version = obj["apiVersion"].as_str().expect("apiVersion");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, obj["kind"].as_str().expect("kind"));
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk));
    let obj: DynamicObject = serde_json::from_value(obj.clone()).expect("object");
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match api.create(&params, &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) => Err(format!("{} {}", s.code, s.message)),
        Err(e) => panic!("dry run: {e}"),
    }
}

/// A container named `name` configured as `how`: reading Secret `db` through an env var
/// (`secretKeyRef`, `secretRef`) or one of the look-alikes (`configMapKeyRef`, `configMapRef`,
/// `fieldRef`, a plain value).
fn container(name: &str, how: &str) -> Value {
    let mut c = json!({"name": name, "image": "nginx"});
    match how {
        "secretKeyRef" => {
            c["env"] =
                json!([{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}])
        }
        "secretRef" => c["envFrom"] = json!([{"secretRef": {"name": "db"}}]),
        "configMapKeyRef" => {
            c["env"] =
                json!([{"name": "C", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}])
        }
        "configMapRef" => c["envFrom"] = json!([{"configMapRef": {"name": "c"}}]),
        "fieldRef" => {
            c["env"] =
                json!([{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])
        }
        _ => c["env"] = json!([{"name": "A", "value": "plain"}]),
    }
    c
}

/// A pod spec whose container `app` (or, for `init`, its init container) is configured as `how`.
fn pod_spec(how: &str, init: bool) -> Value {
    if init {
        json!({"initContainers": [container("init", how)], "containers": [container("app", "plain")]})
    } else {
        json!({"containers": [container("app", how)]})
    }
}

/// An object of `kind` named `name` running `spec`: a bare Pod or a workload with it as its
/// pod template (a CronJob's in its jobTemplate).
fn workload(kind: &str, name: &str, mut spec: Value) -> Value {
    let labels = json!({"app": name});
    let meta = json!({"name": name, "labels": labels});
    if matches!(kind, "Job" | "CronJob") {
        spec["restartPolicy"] = "Never".into();
    }
    let template = json!({"metadata": {"labels": labels}, "spec": spec});
    let (api_version, workload_spec) = match kind {
        "Pod" => ("v1", spec),
        "ReplicationController" => ("v1", json!({"selector": labels, "template": template})),
        "Job" => ("batch/v1", json!({"template": template})),
        "CronJob" => (
            "batch/v1",
            json!({"schedule": "@daily", "jobTemplate": {"spec": {"template": template}}}),
        ),
        "StatefulSet" => (
            "apps/v1",
            json!({"selector": {"matchLabels": labels}, "template": template, "serviceName": name}),
        ),
        _ => (
            "apps/v1",
            json!({"selector": {"matchLabels": labels}, "template": template}),
        ),
    };
    json!({"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": workload_spec})
}

const POD_TEMPLATE_KINDS: [&str; 8] = [
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
    "CronJob",
];

/// `kubectl create --dry-run=server -f -` of `obj` in `ns` with `kubeconfig`: whether it was
/// admitted, and what kubectl printed on stderr.
fn kubectl_create_as(
    cp: &onus_testenv::ControlPlane,
    kubeconfig: &std::path::Path,
    ns: &str,
    obj: &Value,
) -> (bool, String) {
    use std::io::Write;
    let mut child = cp
        .kubectl()
        .env("KUBECONFIG", kubeconfig)
        .args(["create", "--dry-run=server", "-n", ns, "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(obj.to_string().as_bytes())
        .expect("write kubectl input");
    let out = child.wait_with_output().expect("kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// DAT-01 at admission, through the operator: with `data` in Enforce, a new Secret read
/// through an env var is denied in every container list of bare Pods and of every pod template
/// kind, in the ephemeral containers `kubectl debug` adds too; look-alikes, the exception's
/// object, other namespaces and updates that add no Secret env var are admitted. In Audit with
/// `admission: Warn` the same is admitted with a warning. Status and the report say which.
#[tokio::test]
async fn a_secret_read_through_an_env_var_is_prevented_at_admission() {
    let _serial = SERIAL.lock().await;
    let suffix = &onus_testenv::random_suffix()[..6];
    let operator_user = format!("onus-operator-{suffix}");
    let cp = control_plane();
    let admin = cp.client().await;
    grant_cluster_admin(&admin, &operator_user, "User", &operator_user).await;
    let env = TestEnv::start_admission("dat01", Some(&operator_user)).await;
    let tester = format!("gina-{suffix}");
    grant_cluster_admin(&admin, &tester, "User", &tester).await;
    let gina = cp.client_as(&tester, None).await;
    let governed = env.namespace("dat", &[]).await;
    let free = cp.namespace(&admin, "dat-free", &[]).await;
    // Only `data` in Enforce (Pod Security in Audit: only DAT-01 judges the Pods here).
    let spec = |mode: &str| {
        let mut spec = json!({"serviceModel": "PaaS", "mode": mode,
               "controls": {"rbac": {"mode": "Audit"}, "podSecurity": {"mode": "Audit"},
                            "network": {"mode": "Audit"}, "serviceAccounts": {"mode": "Audit"}},
               "exceptions": [{"controls": ["DAT-01"], "reason": "moving to a volume",
                               "resources": [{"kind": "Deployment", "name": "legacy"}]}]});
        if mode == "Audit" {
            spec["admission"] = "Warn".into();
        }
        spec
    };
    let policy = env.apply_policy("dat", spec("Enforce")).await;

    // Denied: each way of reading a Secret through an env var, in each kind.
    let refusal = until_refused("a Deployment reading a Secret through env", async || {
        let d = workload("Deployment", "web", pod_spec("secretKeyRef", false));
        dry_run_object(&gina, &governed, &d).await
    })
    .await;
    for part in ["403", "onus-dat-01", "DAT-01", &policy, "exception"] {
        assert!(refusal.contains(part), "{part:?} not in {refusal:?}");
    }
    for kind in POD_TEMPLATE_KINDS {
        for how in ["secretKeyRef", "secretRef"] {
            for init in [false, true] {
                let w = workload(kind, "web", pod_spec(how, init));
                let refusal = dry_run_object(&gina, &governed, &w)
                    .await
                    .expect_err(&format!("{kind} with {how} (init: {init}) admitted"));
                assert!(refusal.contains("DAT-01"), "{kind}, {how}: {refusal}");
            }
        }
        // Admitted: the look-alikes, and the same in a namespace the policy does not govern.
        for how in ["plain", "configMapKeyRef", "configMapRef", "fieldRef"] {
            let w = workload(kind, "web", pod_spec(how, false));
            dry_run_object(&gina, &governed, &w)
                .await
                .unwrap_or_else(|e| panic!("{kind} with {how}: {e}"));
        }
        let w = workload(kind, "web", pod_spec("secretKeyRef", false));
        dry_run_object(&gina, &free, &w)
            .await
            .unwrap_or_else(|e| panic!("{kind} in an ungoverned namespace: {e}"));
    }
    // The exception's object is admitted; another kind of the same name is not.
    let legacy = workload("Deployment", "legacy", pod_spec("secretRef", false));
    dry_run_object(&gina, &governed, &legacy)
        .await
        .expect("the exception's Deployment");
    let legacy_pod = workload("Pod", "legacy", pod_spec("secretRef", false));
    assert!(
        dry_run_object(&gina, &governed, &legacy_pod).await.is_err(),
        "a Pod named as the excepted Deployment"
    );

    // Existing workloads (made by the exempt admin) can still be scaled, rolled out and
    // restarted; an update adding a Secret env var is denied.
    let existing = workload("Deployment", "existing", pod_spec("secretKeyRef", false));
    create_as(
        &Api::<Deployment>::namespaced(admin.clone(), &governed),
        existing,
    )
    .await;
    let deployments = Api::<Deployment>::namespaced(gina.clone(), &governed);
    let patch = |p: Value| {
        let deployments = deployments.clone();
        async move {
            deployments
                .patch("existing", &PatchParams::default(), &Patch::Merge(p))
                .await
                .map(|_| ())
        }
    };
    patch(json!({"spec": {"replicas": 3}}))
        .await
        .expect("scaling a Deployment that reads a Secret through env");
    deployments
        .patch_scale(
            "existing",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect("its scale subresource");
    let mut app = container("app", "secretKeyRef");
    app["image"] = "nginx:1.27".into();
    patch(
        json!({"spec": {"template": {"metadata": {"annotations": {"restarted": "now"}},
                                       "spec": {"containers": [app.clone()]}}}}),
    )
    .await
    .expect("a new image and a restart");
    let mut more = app.clone();
    more["env"]
        .as_array_mut()
        .expect("env")
        .push(json!({"name": "PLAIN", "value": "x"}));
    patch(json!({"spec": {"template": {"spec": {"containers": [more.clone()]}}}}))
        .await
        .expect("a plain env var added");
    for added in [
        json!({"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}}),
        // The same entry under another name is another env var.
        json!({"name": "PW2", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}),
    ] {
        let mut c = more.clone();
        c["env"].as_array_mut().expect("env").push(added.clone());
        let refused = patch(json!({"spec": {"template": {"spec": {"containers": [c]}}}})).await;
        assert!(refused.is_err(), "an update adding {added} was admitted");
    }
    let mut sidecar = container("sidecar", "secretRef");
    sidecar["image"] = "busybox".into();
    let refused =
        patch(json!({"spec": {"template": {"spec": {"containers": [more, sidecar]}}}})).await;
    assert!(
        refused.is_err(),
        "a new container reading a Secret was admitted"
    );

    // kubectl debug: ephemeral containers come through the Pod's subresource.
    let debugged = workload("Pod", "debugged", pod_spec("secretKeyRef", false));
    create_as(&Api::<Pod>::namespaced(admin.clone(), &governed), debugged).await;
    let pods = Api::<Pod>::namespaced(gina.clone(), &governed);
    let debug = |how: &str| {
        let mut c = container("debugger", how);
        c["image"] = "busybox".into();
        let pods = pods.clone();
        async move {
            let params = PatchParams {
                dry_run: true,
                ..Default::default()
            };
            pods.patch_subresource(
                "ephemeralcontainers",
                "debugged",
                &params,
                &Patch::Strategic(json!({"spec": {"ephemeralContainers": [c]}})),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        }
    };
    for how in ["secretKeyRef", "secretRef"] {
        let refusal = debug(how).await.expect_err(how);
        assert!(refusal.contains("DAT-01"), "{how}: {refusal}");
    }
    debug("plain")
        .await
        .expect("a debug container without a Secret in its env");
    pods.patch(
        "debugged",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"note": "kept"}}})),
    )
    .await
    .expect("relabelling a Pod that reads a Secret through env");

    // Status and report: prevented at admission.
    let rp = env
        .wait_status(&policy, "DAT-01 prevented", |s| {
            s.controls
                .iter()
                .any(|c| c.id == "DAT-01" && c.admission == Some(AdmissionAction::Deny))
        })
        .await;
    assert_eq!(generated_names(&admin).await, ["onus-dat-01"]);
    let report = onus::report::from_policy(&rp, None, jiff::Timestamp::now());
    let row = report
        .controls
        .iter()
        .find(|c| c.id == "DAT-01")
        .expect("DAT-01 row");
    assert_eq!(row.checked_at(), "prevented");

    // Audit with `admission: Warn`: admitted, with the warning.
    env.apply_policy("dat", spec("Audit")).await;
    let web = workload("Deployment", "web", pod_spec("secretRef", false));
    until_admitted("a Secret env var in Warn mode", async || {
        dry_run_object(&gina, &governed, &web).await
    })
    .await;
    let kubeconfig = cp.kubeconfig_as(&tester, None).expect("kubeconfig");
    let deadline = Instant::now() + DEADLINE;
    let warned = loop {
        let (admitted, stderr) = kubectl_create_as(cp, &kubeconfig, &governed, &web);
        assert!(admitted, "Warn mode denied: {stderr}");
        if stderr.contains("Warning") || Instant::now() > deadline {
            break stderr;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for part in ["Warning", "onus-dat-01-warn", "DAT-01", &policy] {
        assert!(warned.contains(part), "{part:?} not in {warned:?}");
    }
    let rp = env
        .wait_status(&policy, "DAT-01 warned", |s| {
            s.controls
                .iter()
                .any(|c| c.id == "DAT-01" && c.admission == Some(AdmissionAction::Warn))
        })
        .await;
    let status = rp.status.as_ref().expect("status");
    let c = onus::status::condition(status, onus::status::WARNED).expect("Warned");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "InPlace"));
    assert!(c.message.contains("DAT-01"), "{}", c.message);
    let report = onus::report::from_policy(&rp, None, jiff::Timestamp::now());
    let row = report
        .controls
        .iter()
        .find(|c| c.id == "DAT-01")
        .expect("DAT-01 row");
    assert_eq!(row.checked_at(), "warned");
    assert!(
        !generated_names(&admin)
            .await
            .contains(&"onus-dat-01".to_string())
    );

    Api::<ResponsibilityPolicy>::all(admin.clone())
        .delete(&policy, &DeleteParams::default())
        .await
        .expect("delete policy");
    common::enforce::until("the generated objects removed", async || {
        generated_names(&admin).await.is_empty()
    })
    .await;
    until_admitted("a Secret env var after the policy is gone", async || {
        let d = workload("Deployment", "web", pod_spec("secretKeyRef", false));
        dry_run_object(&gina, &governed, &d).await
    })
    .await;
    kubectl_ok(
        cp,
        &["delete", "namespace", &governed, &free, "--wait=false"],
    );
}

/// DAT-01's generated expression, evaluated by the API server where no other admission gets
/// in the way: a kubelet's mirror Pod (which the API server's ServiceAccount admission refuses
/// when it references a Secret, so a real Pod cannot show it) through a look-alike kind `Pod`
/// of another group the test retargets the expression at. And the policy as generated never
/// judges that look-alike.
#[tokio::test]
async fn dat_01_admits_mirror_pods_and_never_judges_a_look_alike_kind() {
    let _serial = SERIAL.lock().await;
    let cp = control_plane();
    common::install_crd(cp);
    let admin = cp.client().await;
    let id = onus_testenv::random_suffix()[..6].to_string();
    let tester = format!("hank-{id}");
    grant_cluster_admin(&admin, &tester, "User", &tester).await;
    let hank = cp.client_as(&tester, None).await;
    let node_user = format!("system:node:n2-{id}");
    grant_cluster_admin(&admin, &format!("node-{id}"), "User", &node_user).await;
    let node = cp.client_as(&node_user, Some("system:nodes")).await;
    const GROUP: &str = "lookalike.onus.dev";
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("pods.{GROUP}")},
        "spec": {"group": GROUP, "scope": "Namespaced",
                 "names": {"plural": "pods", "singular": "pod", "kind": "Pod", "listKind": "PodList"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object",
                                   "x-kubernetes-preserve-unknown-fields": true}}}]},
    });
    let out = kubectl_with_input(
        cp,
        &["apply", "--server-side", "-f", "-"],
        crd.to_string().as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cp.wait_crd_established(&format!("pods.{GROUP}"), Duration::from_secs(60));
    let ns = cp.namespace(&admin, "dat-cel", &[]).await;
    let only_data = json!({"serviceModel": "PaaS", "mode": "Enforce", "controls": {
        "rbac": {"enabled": false}, "podSecurity": {"enabled": false},
        "network": {"enabled": false}, "serviceAccounts": {"enabled": false}}});
    let names = apply_for_test(&admin, &id, only_data.clone()).await;
    assert_eq!(names, [format!("cel-{id}-onus-dat-01")]);
    let pod = |api_version: &str, label: &str, mirror: bool| {
        let mut pod = workload("Pod", "static-web", pod_spec("secretKeyRef", false));
        pod["apiVersion"] = api_version.into();
        pod["metadata"]["labels"] = json!({"onus.dev/cel": label});
        pod["spec"]["nodeName"] = format!("n2-{id}").into();
        if mirror {
            pod["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "0123abcd"});
        }
        pod
    };
    // The policy as generated judges Pods...
    let refusal = until_refused("a Pod reading a Secret through env", async || {
        dry_run_object(&hank, &ns, &pod("v1", &id, false)).await
    })
    .await;
    assert!(refusal.contains("DAT-01"), "{refusal}");
    // ... never a kind of the same name in another group.
    let look_alike = format!("{GROUP}/v1");
    dry_run_object(&hank, &ns, &pod(&look_alike, &id, false))
        .await
        .expect("a look-alike Pod of another group");
    // A real mirror Pod that reads a Secret is the API server's to refuse, not onus's.
    let refusal = dry_run_object(&node, &ns, &pod("v1", &id, true))
        .await
        .expect_err("a mirror Pod referencing a Secret");
    assert!(
        refusal.contains("mirror pod may not reference secrets") && !refusal.contains("DAT-01"),
        "{refusal}"
    );

    // The same expression aimed at the look-alike kind: a kubelet's mirror Pod is admitted;
    // anyone else's with the annotation, and a node's Pod that is no mirror, are denied.
    let retargeted = format!("{id}-mirror");
    let rp: ResponsibilityPolicy = serde_json::from_value(json!({
        "apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
        "metadata": {"name": format!("cel-{retargeted}")}, "spec": only_data,
    }))
    .expect("policy");
    let g = admission::generate([&rp], jiff::Timestamp::now(), None)
        .remove("onus-dat-01")
        .expect("DAT-01");
    let name = format!("cel-{retargeted}");
    let mut policy = g.policy;
    let mut binding = g.binding;
    policy["metadata"]["name"] = name.clone().into();
    policy["spec"]["matchConstraints"]["resourceRules"] = json!([{"apiGroups": [GROUP],
        "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["pods"]}]);
    binding["metadata"]["name"] = name.clone().into();
    binding["spec"]["policyName"] = name.clone().into();
    binding["spec"]["matchResources"]["objectSelector"] =
        json!({"matchLabels": {"onus.dev/cel": retargeted}});
    let params = PatchParams::apply("onus-tests").force();
    Api::<ValidatingAdmissionPolicy>::all(admin.clone())
        .patch(&name, &params, &Patch::Apply(&policy))
        .await
        .expect("retargeted policy");
    Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone())
        .patch(&name, &params, &Patch::Apply(&binding))
        .await
        .expect("retargeted binding");
    let refusal = until_refused(
        "a user's look-alike Pod with the mirror annotation",
        async || dry_run_object(&hank, &ns, &pod(&look_alike, &retargeted, true)).await,
    )
    .await;
    assert!(refusal.contains("DAT-01"), "{refusal}");
    dry_run_object(&node, &ns, &pod(&look_alike, &retargeted, true))
        .await
        .expect("a kubelet's mirror Pod");
    let refusal = dry_run_object(&node, &ns, &pod(&look_alike, &retargeted, false))
        .await
        .expect_err("a node's Pod that is no mirror");
    assert!(refusal.contains("DAT-01"), "{refusal}");

    for name in names.into_iter().chain([name]) {
        Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone())
            .delete(&name, &DeleteParams::default())
            .await
            .expect("delete binding");
        Api::<ValidatingAdmissionPolicy>::all(admin.clone())
            .delete(&name, &DeleteParams::default())
            .await
            .expect("delete policy");
    }
    kubectl_ok(
        cp,
        &[
            "delete",
            "customresourcedefinition",
            &format!("pods.{GROUP}"),
            "--wait=false",
        ],
    );
    kubectl_ok(cp, &["delete", "namespace", &ns, "--wait=false"]);
}

/// DAT-01 never locks out an existing workload by the cost of its check: an update that adds
/// no Secret env var to a Deployment whose container already reads many Secret keys through
/// env vars (made before enforcement, here by the exempt admin) is admitted, not refused with
/// a CEL cost error (failurePolicy Fail would turn that into a denial of every relabel,
/// restart and new image); adding one is still denied.
#[tokio::test]
async fn dat_01_admits_updates_of_a_workload_with_many_secret_env_vars() {
    let _serial = SERIAL.lock().await;
    let cp = control_plane();
    common::install_crd(cp);
    let admin = cp.client().await;
    let id = onus_testenv::random_suffix()[..6].to_string();
    let tester = format!("hal-{id}");
    grant_cluster_admin(&admin, &tester, "User", &tester).await;
    let hal = cp.client_as(&tester, None).await;
    let ns = cp.namespace(&admin, "dat-cost", &[]).await;
    let names = apply_for_test(
        &admin,
        &id,
        json!({"serviceModel": "PaaS", "mode": "Enforce",
               "controls": {"rbac": {"mode": "Audit"}, "podSecurity": {"mode": "Audit"},
                            "network": {"mode": "Audit"}, "serviceAccounts": {"mode": "Audit"}}}),
    )
    .await;
    let mut big = labelled(workload("Deployment", "big", pod_spec("plain", false)), &id);
    let env: Vec<Value> = (0..1000)
        .map(|i| json!({"name": format!("S{i}"), "valueFrom": {"secretKeyRef": {"name": "db", "key": format!("k{i}")}}}))
        .collect();
    big["spec"]["template"]["spec"]["containers"][0]["env"] = env.into();
    until_refused("DAT-01 for a new Deployment", async || {
        dry_run::<Deployment>(&hal, Some(&ns), &big).await
    })
    .await;
    let deployments = Api::<Deployment>::namespaced(admin.clone(), &ns);
    create_as(&deployments, big.clone()).await;
    let as_hal = Api::<Deployment>::namespaced(hal.clone(), &ns);
    let update = |p: Value| {
        let as_hal = as_hal.clone();
        async move {
            as_hal
                .patch("big", &PatchParams::default(), &Patch::Merge(p))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    };
    let mut results = Vec::new();
    for (what, p) in [
        (
            "a relabel",
            json!({"metadata": {"labels": {"onus.dev/cel": id, "note": "kept"}}}),
        ),
        ("a scale", json!({"spec": {"replicas": 2}})),
        (
            "a restart",
            json!({"spec": {"template": {"metadata": {"annotations": {"restarted": "now"}}}}}),
        ),
    ] {
        results.push((what, update(p).await));
    }
    let mut image = big["spec"]["template"]["spec"]["containers"][0].clone();
    image["image"] = "nginx:1.27".into();
    results.push((
        "a new image",
        update(json!({"spec": {"template": {"spec": {"containers": [image.clone()]}}}})).await,
    ));
    let mut plain = image.clone();
    plain["env"]
        .as_array_mut()
        .expect("env")
        .push(json!({"name": "PLAIN", "value": "x"}));
    results.push((
        "a plain env var added",
        update(json!({"spec": {"template": {"spec": {"containers": [plain.clone()]}}}})).await,
    ));
    let failed: Vec<_> = results
        .iter()
        .filter_map(|(what, r)| {
            r.as_ref()
                .err()
                .map(|e| (what, e.chars().take(300).collect::<String>()))
        })
        .collect();
    assert!(failed.is_empty(), "refused: {failed:?}");
    let mut added = plain;
    added["env"]
        .as_array_mut()
        .expect("env")
        .push(json!({"name": "T", "valueFrom": {"secretKeyRef": {"name": "api", "key": "t"}}}));
    let refused = update(json!({"spec": {"template": {"spec": {"containers": [added]}}}})).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("DAT-01")),
        "{refused:?}"
    );
    // Many containers, each with a few Secret env vars: a new image for all of them and a
    // plain env var in the last one are admitted.
    let mut wide = labelled(
        workload("Deployment", "wide", pod_spec("plain", false)),
        &id,
    );
    let containers: Vec<Value> = (0..60)
        .map(|c| {
            let env: Vec<Value> = (0..20)
                .map(|i| json!({"name": format!("S{i}"), "valueFrom": {"secretKeyRef": {"name": format!("db{c}"), "key": format!("k{i}")}}}))
                .collect();
            json!({"name": format!("c{c}"), "image": "nginx", "env": env})
        })
        .collect();
    wide["spec"]["template"]["spec"]["containers"] = containers.clone().into();
    create_as(&deployments, wide).await;
    let mut changed = containers;
    for c in &mut changed {
        c["image"] = "nginx:1.27".into();
    }
    let last = changed.last_mut().expect("a container");
    last["env"]
        .as_array_mut()
        .expect("env")
        .push(json!({"name": "PLAIN", "value": "x"}));
    as_hal
        .patch(
            "wide",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": changed}}}})),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string().chars().take(300).collect::<String>())
        .expect("a new image for 60 containers with Secret env vars");
    for name in names {
        Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone())
            .delete(&name, &DeleteParams::default())
            .await
            .expect("delete binding");
        Api::<ValidatingAdmissionPolicy>::all(admin.clone())
            .delete(&name, &DeleteParams::default())
            .await
            .expect("delete policy");
    }
}
