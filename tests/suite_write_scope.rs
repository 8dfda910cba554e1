//! Write scope over the whole suite: every test's API server keeps an audit log of every write,
//! and `make test` has the control planes leave them in `$ONUS_AUDIT_DIR` when they stop. Run
//! last (`make test` runs it after the suite, with `ONUS_CHECK_AUDIT_DIR` naming that
//! directory), [`every_write_of_onus_in_the_suite_is_in_its_scope`] fails if onus's identity
//! (any user named `onus-operator-…`, see `common::OPERATOR_USER_PREFIX`) wrote outside its
//! scope, or deleted an object it had not written first.
//!
//! The scope, whatever the test: its policies' status and finalizers, Events, its Lease, the
//! `onus-default-deny` NetworkPolicies, the Namespaces (their Pod Security labels), the
//! `default` ServiceAccounts (their token field), its generated admission policies and
//! bindings (named `onus-…`), and, with policy reports on, its reports (named `onus-…`, written
//! by server-side apply, so the audit log names each; deleted only after onus wrote them). The audit log is at Metadata level: it names the object, not the
//! fields; which fields onus owns is proven per test (tests/enforce.rs, tests/write_scope.rs).

use std::{collections::BTreeSet, path::Path};

use onus_testenv::AuditEvent;

/// The directory of audit logs to check (set by `make test` for this final step only).
const CHECK_DIR_ENV: &str = "ONUS_CHECK_AUDIT_DIR";

/// Users that act as onus in the tests.
const PREFIX: &str = "onus-operator-";

fn object(e: &AuditEvent) -> String {
    format!("{}/{}/{}/{}", e.api_group, e.resource, e.namespace, e.name)
}

/// Why a write of onus is outside its scope, if it is.
fn out_of_scope(e: &AuditEvent, written: &BTreeSet<String>) -> Option<&'static str> {
    // A server-side dry run stores nothing (tests ask the API server, as onus's identity,
    // whether the admission policies exempt it).
    if e.uri.contains("dryRun=All") {
        return None;
    }
    let verb = e.verb.as_str();
    let is = |verbs: &[&str]| verbs.contains(&verb);
    let allowed = match (
        e.api_group.as_str(),
        e.resource.as_str(),
        e.subresource.as_str(),
    ) {
        ("onus.dev", "responsibilitypolicies", "" | "status") => is(&["patch", "update"]),
        ("networking.k8s.io", "networkpolicies", "") => {
            // A create names the object in its body only: onus applies (patch) instead.
            e.name == "onus-default-deny" && is(&["patch", "update", "delete"])
        }
        ("", "namespaces", "") => is(&["patch", "update"]),
        ("", "serviceaccounts", "") => e.name == "default" && is(&["patch", "update"]),
        ("" | "events.k8s.io", "events", "") => is(&["create", "patch", "update"]),
        ("coordination.k8s.io", "leases", "") => is(&["create", "patch", "update"]),
        // "Who am I" (for the admission policies' exemption of onus itself): a create that
        // stores nothing.
        ("authentication.k8s.io", "selfsubjectreviews", "") => is(&["create"]),
        (
            "admissionregistration.k8s.io",
            "validatingadmissionpolicies" | "validatingadmissionpolicybindings",
            "",
        ) => e.name.starts_with("onus-") && is(&["patch", "update", "delete"]),
        // Policy reports: applied (a PATCH naming the report), never a plain create.
        ("openreports.io", "reports" | "clusterreports", "")
        | ("wgpolicyk8s.io", "policyreports" | "clusterpolicyreports", "") => {
            e.name.starts_with("onus-") && is(&["patch", "delete"])
        }
        _ => false,
    };
    if !allowed {
        return Some("outside onus's scope");
    }
    if verb == "delete" && !written.contains(&object(e)) {
        return Some("a delete of an object onus had not written");
    }
    None
}

/// The writes of onus in one audit log that break the scope, as lines for a failure message.
fn violations(events: &[AuditEvent]) -> Vec<String> {
    let mut written = BTreeSet::new();
    let mut out = Vec::new();
    for e in events.iter().filter(|e| e.user.starts_with(PREFIX)) {
        if !["create", "update", "patch", "delete", "deletecollection"].contains(&e.verb.as_str()) {
            continue;
        }
        if let Some(why) = out_of_scope(e, &written) {
            out.push(format!("{why}: {e} ({})", e.uri));
        }
        if e.verb != "delete" {
            written.insert(object(e));
        }
    }
    out
}

#[test]
fn every_write_of_onus_in_the_suite_is_in_its_scope() {
    let Some(dir) = std::env::var_os(CHECK_DIR_ENV) else {
        // Only `make test` has the audit logs of a whole run; the rules are checked below.
        eprintln!("{CHECK_DIR_ENV} not set: no suite audit logs to check");
        return;
    };
    let dir = Path::new(&dir);
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    assert!(!logs.is_empty(), "no audit logs in {}", dir.display());
    let (mut writes, mut broken) = (0, Vec::new());
    for log in &logs {
        let text =
            std::fs::read_to_string(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let events = onus_testenv::parse_audit_log(&text);
        writes += events
            .iter()
            .filter(|e| {
                e.user.starts_with(PREFIX)
                    && e.verb != "get"
                    && e.verb != "list"
                    && e.verb != "watch"
            })
            .count();
        broken.extend(
            violations(&events)
                .into_iter()
                .map(|v| format!("{}: {v}", log.display())),
        );
    }
    assert!(
        writes > 0,
        "{} audit logs, no write by onus in any: the check would prove nothing",
        logs.len()
    );
    assert!(
        broken.is_empty(),
        "{} writes of onus outside its scope in {} audit logs:\n{}",
        broken.len(),
        logs.len(),
        broken.join("\n")
    );
    eprintln!(
        "{writes} writes of onus in {} audit logs, all in scope",
        logs.len()
    );
}

fn event(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> AuditEvent {
    AuditEvent {
        user: "onus-operator-x".into(),
        groups: vec![],
        verb: verb.into(),
        api_group: group.into(),
        resource: resource.into(),
        subresource: sub.into(),
        namespace: ns.into(),
        name: name.into(),
        code: Some(200),
        received: jiff::Timestamp::UNIX_EPOCH,
        uri: String::new(),
        user_agent: String::new(),
    }
}

#[test]
fn the_scope_rules_allow_onus_objects_and_nothing_else() {
    let np = "networking.k8s.io";
    let ok = [
        event(
            "patch",
            "onus.dev",
            "responsibilitypolicies",
            "status",
            "",
            "p",
        ),
        event("patch", "onus.dev", "responsibilitypolicies", "", "", "p"),
        event(
            "patch",
            np,
            "networkpolicies",
            "",
            "shop",
            "onus-default-deny",
        ),
        event(
            "delete",
            np,
            "networkpolicies",
            "",
            "shop",
            "onus-default-deny",
        ),
        event("patch", "", "namespaces", "", "", "shop"),
        event("patch", "", "serviceaccounts", "", "shop", "default"),
        event("create", "events.k8s.io", "events", "", "shop", ""),
        event(
            "create",
            "authentication.k8s.io",
            "selfsubjectreviews",
            "",
            "",
            "",
        ),
        event(
            "create",
            "coordination.k8s.io",
            "leases",
            "",
            "onus-system",
            "",
        ),
        event(
            "update",
            "coordination.k8s.io",
            "leases",
            "",
            "onus-system",
            "onus",
        ),
    ];
    assert_eq!(violations(&ok), Vec::<String>::new());
    // Policy reports: applied, then deleted (after onus wrote them).
    let reports = [
        event("patch", "openreports.io", "reports", "", "shop", "onus-p"),
        event("delete", "openreports.io", "reports", "", "shop", "onus-p"),
        event(
            "patch",
            "openreports.io",
            "clusterreports",
            "",
            "",
            "onus-p",
        ),
        event(
            "delete",
            "openreports.io",
            "clusterreports",
            "",
            "",
            "onus-p",
        ),
        event(
            "patch",
            "wgpolicyk8s.io",
            "policyreports",
            "",
            "shop",
            "onus-p",
        ),
        event(
            "delete",
            "wgpolicyk8s.io",
            "policyreports",
            "",
            "shop",
            "onus-p",
        ),
        event(
            "patch",
            "wgpolicyk8s.io",
            "clusterpolicyreports",
            "",
            "",
            "onus-p",
        ),
    ];
    assert_eq!(violations(&reports), Vec::<String>::new());

    for bad in [
        event("delete", "onus.dev", "responsibilitypolicies", "", "", "p"),
        event("create", "onus.dev", "responsibilitypolicies", "", "", ""),
        event("patch", np, "networkpolicies", "", "shop", "allow-web"),
        event("delete", np, "networkpolicies", "", "shop", "allow-web"),
        event("delete", "", "namespaces", "", "", "shop"),
        event("patch", "", "serviceaccounts", "", "shop", "builder"),
        event("patch", "apps", "deployments", "", "shop", "app"),
        event("create", "", "pods", "", "shop", ""),
        event("patch", "", "secrets", "", "shop", "token"),
        event("deletecollection", np, "networkpolicies", "", "shop", ""),
        event(
            "patch",
            "admissionregistration.k8s.io",
            "validatingadmissionpolicies",
            "",
            "",
            "user-vap",
        ),
        event(
            "patch",
            "openreports.io",
            "reports",
            "",
            "shop",
            "kyverno-p",
        ),
        event("create", "openreports.io", "reports", "", "shop", ""),
        event(
            "update",
            "wgpolicyk8s.io",
            "policyreports",
            "",
            "shop",
            "onus-p",
        ),
        event(
            "delete",
            "wgpolicyk8s.io",
            "policyreports",
            "",
            "shop",
            "onus-q",
        ),
        event("patch", "openreports.io", "reportsx", "", "shop", "onus-p"),
    ] {
        assert_eq!(violations(std::slice::from_ref(&bad)).len(), 1, "{bad}");
    }
    // A delete of what onus never wrote, even its own name, is out of scope.
    let delete = event(
        "delete",
        np,
        "networkpolicies",
        "",
        "other",
        "onus-default-deny",
    );
    assert_eq!(violations(std::slice::from_ref(&delete)).len(), 1);
    // Other users' writes are not onus's.
    let mut admin = event("delete", "", "namespaces", "", "", "shop");
    admin.user = "onus-testenv-admin".into();
    assert!(violations(&[admin]).is_empty());
}

#[test]
fn a_dry_run_stores_nothing_and_is_no_write() {
    let mut crb = event(
        "create",
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "",
        "",
        "x",
    );
    assert!(out_of_scope(&crb, &BTreeSet::new()).is_some());
    crb.uri = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings?&dryRun=All".into();
    assert_eq!(out_of_scope(&crb, &BTreeSet::new()), None);
}
