//! PolicyReports against the real API server, with the report CRDs as their projects publish
//! them (fetched from their Go modules by hack/fetch-report-crds.sh, which `make tools` runs):
//! openreports.io/v1alpha1 from github.com/openreports/reports-api, wgpolicyk8s.io/v1alpha2
//! from github.com/kyverno/kyverno. One scenario per API (the two groups are independent, so
//! they run in parallel on the shared API server):
//!
//! - before the CRDs exist: the policy says so (condition PolicyReports=False,
//!   ReportApiMissing) and an Event says it once;
//! - once they are installed: one report per governed namespace and one cluster report, their
//!   summaries exactly what the status counts, results capped;
//! - nothing is written while nothing changes (the audit log);
//! - a fix rewrites the report; a namespace leaving the policy loses its report;
//! - the periodic re-list (every 2 s here, 5 min by default) puts back a report deleted or
//!   edited with kubectl and removes a report of onus's that its memory misses (a former
//!   leader's late write) in a namespace the policy no longer reports on;
//! - a report of onus's name that onus did not create is neither updated nor deleted, and the
//!   refusal shows in status;
//! - a standby writes no report; the next leader does;
//! - deleting the policy deletes its reports.

mod common;

use std::time::{Duration, Instant};

use common::{
    OPERATOR_USER_PREFIX, TEST_LABEL, TestEnv, deployment, hardened, install_report_crds,
    kubectl_ok,
};
use k8s_openapi::api::{core::v1::Namespace, events::v1::Event};
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, ListParams, Patch, PatchParams},
};
use onus::{
    controller::{self, ReportApi, ReportSettings, Settings, report_name},
    crd::{ControlResult, ResponsibilityPolicy, ResponsibilityPolicyStatus},
    leader::Leadership,
    status::{POLICY_REPORTS, condition},
};
use serde_json::{Value, json};

fn reports_api(env: &TestEnv, api: ReportApi, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(env.client.clone(), ns, &api.resource(false)),
        None => Api::all_with(env.client.clone(), &api.resource(true)),
    }
}

async fn report(
    env: &TestEnv,
    api: ReportApi,
    namespace: Option<&str>,
    name: &str,
) -> Option<DynamicObject> {
    reports_api(env, api, namespace)
        .get_opt(name)
        .await
        .expect("get report")
}

/// Waits until the report satisfies `ready` (or is absent, for `None`); panics with it if not.
async fn wait_report(
    env: &TestEnv,
    api: ReportApi,
    namespace: Option<&str>,
    name: &str,
    what: &str,
    ready: impl Fn(Option<&DynamicObject>) -> bool,
) -> Option<DynamicObject> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let found = report(env, api, namespace, name).await;
        if ready(found.as_ref()) {
            return found;
        }
        if Instant::now() > deadline {
            panic!(
                "report {namespace:?}/{name}: {what} not reached in 40s; it is:\n{}",
                serde_yaml::to_string(&found).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn policy(env: &TestEnv, name: &str) -> ResponsibilityPolicy {
    Api::<ResponsibilityPolicy>::all(env.client.clone())
        .get(name)
        .await
        .expect("get policy")
}

/// The summary a namespace report must have, from the policy's status (one governed
/// namespace holds every namespaced violation; the RBAC family is off, so nothing is
/// cluster-scoped).
fn expected_summary(status: &ResponsibilityPolicyStatus) -> Value {
    let checked = |c: &&onus::crd::ControlStatus| {
        matches!(c.result, ControlResult::Pass | ControlResult::Fail)
    };
    let fail: u64 = status
        .controls
        .iter()
        .filter(|c| c.result == ControlResult::Fail)
        .map(|c| c.violations)
        .sum();
    let pass = status
        .controls
        .iter()
        .filter(|c| c.result == ControlResult::Pass)
        .count();
    let skip = status.controls.iter().filter(|c| !checked(c)).count();
    json!({"pass": pass, "fail": fail, "warn": 0, "error": 0, "skip": skip})
}

/// Waits until the namespace's report summarises what the policy's status counts (the report
/// is written just before the status, by the same reconcile); returns both.
async fn consistent(
    env: &TestEnv,
    api: ReportApi,
    policy_name: &str,
    namespace: &str,
    name: &str,
) -> (DynamicObject, Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = policy(env, policy_name).await.status.unwrap_or_default();
        let expected = expected_summary(&status);
        let found = report(env, api, Some(namespace), name).await;
        if let Some(found) = found.clone().filter(|r| r.data["summary"] == expected) {
            return (found, expected);
        }
        if Instant::now() > deadline {
            panic!(
                "report {namespace}/{name} does not summarise the status ({expected}) in 30s; \
                 it is:\n{}",
                serde_yaml::to_string(&found).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn privileged() -> Value {
    let mut sc = hardened();
    sc["privileged"] = json!(true);
    sc.as_object_mut()
        .map(|o| o.remove("allowPrivilegeEscalation"));
    sc
}

/// The operator's writes of reports in the audit log.
fn report_writes(env: &TestEnv, api: ReportApi) -> Vec<onus_testenv::AuditEvent> {
    let group = api.api_version();
    let group = group.split('/').next().unwrap_or_default().to_string();
    let user = format!("{OPERATOR_USER_PREFIX}{}", env.id);
    env.cp
        .audit_events()
        .into_iter()
        .filter(|e| e.user == user && e.api_group == group)
        .filter(|e| !["get", "list", "watch"].contains(&e.verb.as_str()))
        .collect()
}

async fn label_namespace(env: &TestEnv, ns: &str, labels: Value) {
    Api::<Namespace>::all(env.client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": labels}})),
        )
        .await
        .expect("label namespace");
}

/// How often the scenario's operator lists its reports again.
const RELIST: Duration = Duration::from_secs(2);

async fn scenario(api: ReportApi, test: &str) {
    // The operator leads through a campaign the test drives (a standby must write nothing).
    let env = TestEnv::without_operator(test).await;
    let (campaign, leadership) = Leadership::elected();
    campaign.lead();
    let operator = env
        .cp
        .client_as(
            &format!("{OPERATOR_USER_PREFIX}{}", env.id),
            Some("system:masters"),
        )
        .await;
    let settings = Settings {
        instance: env.id.clone(),
        policy_selector: Some(format!("{TEST_LABEL}={}", env.id)),
        admission_policies: false,
        leadership,
        // Re-listed every 2 s (5 min by default), so that step 6 sees it.
        reports: Some(ReportSettings {
            api,
            max_results: 3,
            relist: RELIST,
        }),
        ..Settings::default()
    };
    tokio::spawn(controller::run(
        operator.clone(),
        settings,
        std::future::pending(),
    ));
    // Pod Security labels on both: `lab` fails nothing, `shop` only through its workloads.
    let psa = [
        ("pod-security.kubernetes.io/enforce", "restricted"),
        ("pod-security.kubernetes.io/warn", "restricted"),
        ("pod-security.kubernetes.io/audit", "restricted"),
    ];
    let shop = env.namespace("shop", &psa).await;
    let lab = env.namespace("lab", &psa).await;
    for name in ["a", "b", "c", "d"] {
        env.create(Some(&shop), deployment(name, privileged(), json!({})))
            .await;
    }
    // Only Pod Security is checked: every failing object of the policy is in `shop`, and the
    // status counts are those the report must show.
    let policy_name = env
        .apply_policy(
            "reports",
            json!({"serviceModel": "PaaS", "controls": {
                "rbac": {"enabled": false}, "network": {"enabled": false},
                "serviceAccounts": {"enabled": false}, "data": {"enabled": false},
                "audit": {"enabled": false}}}),
        )
        .await;

    // 1. No CRDs yet: said in status, and once with an Event.
    env.wait_status(&policy_name, "PolicyReports=False ReportApiMissing", |s| {
        condition(s, POLICY_REPORTS)
            .is_some_and(|c| c.status == "False" && c.reason == "ReportApiMissing")
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = Api::<Event>::all(env.client.clone())
            .list(&ListParams::default().fields(&format!(
                "regarding.name={policy_name},reason=ReportApiMissing"
            )))
            .await
            .expect("list events")
            .items;
        if !events.is_empty() {
            assert_eq!(events.len(), 1, "one Event: {events:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no ReportApiMissing Event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 2. The CRDs arrive: the reports follow (discovery looks again).
    install_report_crds(env.cp, api);
    let p = env
        .wait_status(&policy_name, "PolicyReports=True", |s| {
            condition(s, POLICY_REPORTS).is_some_and(|c| c.status == "True")
        })
        .await;
    let uid = p.uid().expect("uid");
    let name = report_name(&policy_name, &uid);
    let (shop_report, expected) = consistent(&env, api, &policy_name, &shop, &name).await;
    assert!(expected["fail"].as_u64() > Some(4), "{expected}");
    let results = shop_report.data["results"].as_array().expect("results");
    assert_eq!(results.len(), 3, "capped at 3: {results:?}");
    assert!(results.iter().all(|r| r["result"] == "fail"), "{results:?}");
    assert!(results.iter().all(|r| r["policy"] == policy_name.as_str()));
    assert!(
        results
            .iter()
            .all(|r| r["resources"][0]["namespace"] == shop.as_str()),
        "{results:?}"
    );
    let labels = shop_report.labels();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("onus")
    );
    assert_eq!(
        shop_report.owner_references()[0].uid,
        uid,
        "owned by the policy"
    );
    // `lab` has nothing failing: every checked control passes there.
    let lab_report = report(&env, api, Some(&lab), &name)
        .await
        .expect("lab's report");
    assert_eq!(lab_report.data["summary"]["fail"], 0);
    assert_eq!(lab_report.data["summary"]["skip"], expected["skip"]);
    // The cluster report: the eight cluster-scoped RBAC controls, off in this policy.
    let cluster = report(&env, api, None, &name)
        .await
        .expect("cluster report");
    assert_eq!(
        cluster.data["summary"],
        json!({"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 8})
    );

    // 3. Idle: a change that concerns the policy but alters nothing writes no report.
    let writes = report_writes(&env, api).len();
    assert!(writes >= 3, "the three reports were written");
    label_namespace(&env, &lab, json!({"unrelated": "change"})).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = report_writes(&env, api);
    assert_eq!(
        after.len(),
        writes,
        "writes while idle: {:?}",
        &after[writes..]
    );
    for e in &after {
        assert!(
            ["patch", "delete"].contains(&e.verb.as_str()) && e.name == name,
            "onus writes only its reports, by name: {e}"
        );
    }

    // 4. A fix rewrites the report with the new counts.
    env.delete(Some(&shop), "apps/v1", "Deployment", "a").await;
    env.wait_status(&policy_name, "one privileged Deployment fewer", |s| {
        expected_summary(s)["fail"].as_u64() < expected["fail"].as_u64()
    })
    .await;
    consistent(&env, api, &policy_name, &shop, &name).await;

    // 5. A namespace leaving the policy loses its report.
    label_namespace(&env, &lab, json!({"onus.dev/test-ns": "elsewhere"})).await;
    wait_report(&env, api, Some(&lab), &name, "deleted", |r| r.is_none()).await;

    // 6. Out of band: nothing tells onus of a change to its reports, so it lists them again
    // every `relist`. A report deleted with kubectl comes back, one edited is put back.
    let (kind, plural) = api.kind(false);
    let group = api.api_version();
    let resource = format!("{plural}.{}", group.split('/').next().unwrap_or_default());
    kubectl_ok(env.cp, &["delete", &resource, &name, "-n", &shop]);
    wait_report(
        &env,
        api,
        Some(&shop),
        &name,
        "put back after a kubectl delete",
        |r| r.is_some(),
    )
    .await;
    consistent(&env, api, &policy_name, &shop, &name).await;
    kubectl_ok(
        env.cp,
        &[
            "patch",
            &resource,
            &name,
            "-n",
            &shop,
            "--type=merge",
            "-p",
            r#"{"summary": {"fail": 0}, "results": []}"#,
        ],
    );
    let (restored, _) = consistent(&env, api, &policy_name, &shop, &name).await;
    assert_eq!(
        restored.data["results"].as_array().map(Vec::len),
        Some(3),
        "the results are put back too"
    );
    // A report of onus's it does not remember writing, in a namespace that left the policy
    // (step 5): as a former leader's late write leaves it, written by onus's identity and
    // field manager. The re-list finds it and removes it.
    Api::<DynamicObject>::namespaced_with(operator.clone(), &lab, &api.resource(false))
        .patch(
            &name,
            &PatchParams::apply(onus::FIELD_MANAGER).force(),
            &Patch::Apply(&json!({
                "apiVersion": api.api_version(), "kind": kind,
                "metadata": {"name": name, "namespace": lab,
                    "labels": {"app.kubernetes.io/managed-by": "onus",
                               (controller::POLICY_UID_LABEL): uid},
                    "ownerReferences": [{"apiVersion": "onus.dev/v1alpha1",
                        "kind": "ResponsibilityPolicy", "name": policy_name, "uid": uid}]},
                "summary": {"pass": 0, "fail": 1, "warn": 0, "error": 0, "skip": 0},
            })),
        )
        .await
        .expect("a former leader's late write");
    wait_report(
        &env,
        api,
        Some(&lab),
        &name,
        "the stale report removed",
        |r| r.is_none(),
    )
    .await;

    // 7. A report of onus's name that onus did not create: left alone, and status says so.
    let taken = env.cp.namespace(&env.client, "taken", &[]).await;
    let (kind, _) = api.kind(false);
    let foreign = env
        .create(
            Some(&taken),
            json!({"apiVersion": api.api_version(), "kind": kind,
                   "metadata": {"name": name, "namespace": taken},
                   "summary": {"pass": 7}}),
        )
        .await;
    label_namespace(&env, &taken, json!({"onus.dev/test-ns": env.id})).await;
    env.wait_status(&policy_name, "PolicyReports=False ReportWriteFailed", |s| {
        condition(s, POLICY_REPORTS).is_some_and(|c| {
            c.status == "False" && c.reason == "ReportWriteFailed" && c.message.contains(&taken)
        })
    })
    .await;
    label_namespace(&env, &taken, json!({"onus.dev/test-ns": "elsewhere"})).await;
    env.wait_status(&policy_name, "PolicyReports=True again", |s| {
        condition(s, POLICY_REPORTS).is_some_and(|c| c.status == "True")
    })
    .await;
    let still = report(&env, api, Some(&taken), &name)
        .await
        .expect("the foreign report stays");
    assert_eq!(
        still.resource_version(),
        foreign["metadata"]["resourceVersion"]
            .as_str()
            .map(String::from),
        "the foreign report is untouched"
    );

    // 8. A standby writes no report, however the results change; the next leader does.
    campaign.stand_by();
    let writes = report_writes(&env, api).len();
    let failing = report(&env, api, Some(&shop), &name)
        .await
        .expect("shop's report")
        .data["summary"]["fail"]
        .as_u64();
    env.delete(Some(&shop), "apps/v1", "Deployment", "b").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = report_writes(&env, api);
    assert_eq!(
        after.len(),
        writes,
        "a standby wrote reports: {:?}",
        &after[writes..]
    );
    campaign.lead();
    wait_report(
        &env,
        api,
        Some(&shop),
        &name,
        "the new leader's update",
        |r| r.is_some_and(|r| r.data["summary"]["fail"].as_u64() < failing),
    )
    .await;
    consistent(&env, api, &policy_name, &shop, &name).await;

    // 9. Deleting the policy deletes its reports (and only them).
    Api::<ResponsibilityPolicy>::all(env.client.clone())
        .delete(&policy_name, &Default::default())
        .await
        .expect("delete policy");
    wait_report(
        &env,
        api,
        Some(&shop),
        &name,
        "deleted with the policy",
        |r| r.is_none(),
    )
    .await;
    wait_report(&env, api, None, &name, "deleted with the policy", |r| {
        r.is_none()
    })
    .await;
    assert!(report(&env, api, Some(&taken), &name).await.is_some());
}

#[tokio::test]
async fn openreports_reports_follow_the_policy() {
    scenario(ReportApi::OpenReports, "openreports").await;
}

#[tokio::test]
async fn wgpolicyk8s_reports_follow_the_policy() {
    scenario(ReportApi::WgPolicyK8s, "wgpolicyk8s").await;
}
