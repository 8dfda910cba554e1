use super::*;

fn policy(name: &str, spec: Value) -> ResponsibilityPolicy {
    serde_json::from_value(json!({
        "apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("policy")
}

fn now() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().expect("time")
}

fn expressions(g: &Generated) -> Vec<String> {
    g.policy["spec"]["validations"]
        .as_array()
        .expect("validations")
        .iter()
        .map(|v| v["expression"].as_str().expect("expression").to_string())
        .collect()
}

#[test]
fn an_enforce_policy_denies_and_an_audit_policy_generates_nothing_unless_it_warns() {
    let enforce = policy("shop", json!({"serviceModel": "PaaS", "mode": "Enforce"}));
    let audit = policy("lab", json!({"serviceModel": "PaaS"}));
    let warn = policy("dev", json!({"serviceModel": "PaaS", "admission": "Warn"}));
    let names = |ps: &[&ResponsibilityPolicy]| -> Vec<String> {
        generate(ps.iter().copied(), now(), None)
            .into_keys()
            .collect()
    };
    assert_eq!(
        names(&[&enforce]),
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
    assert!(names(&[&audit]).is_empty());
    assert_eq!(
        names(&[&warn]),
        [
            "onus-dat-01-warn",
            "onus-iam-01-warn",
            "onus-iam-02-warn",
            "onus-iam-05-warn",
            "onus-iam-07-warn",
            "onus-net-05-warn",
            "onus-wkl-10-warn"
        ]
    );
    let generated = generate([&enforce, &warn], now(), None);
    assert_eq!(generated.len(), 14);
    for g in generated.values() {
        let actions = &g.binding["spec"]["validationActions"];
        match g.action {
            AdmissionAction::Deny => assert_eq!(actions, &json!(["Deny"])),
            AdmissionAction::Warn => assert_eq!(actions, &json!(["Warn", "Audit"])),
        }
        assert!(all_names().contains(&g.policy["metadata"]["name"].as_str().unwrap().into()));
        assert_eq!(
            g.policy["metadata"]["name"],
            g.binding["spec"]["policyName"]
        );
        assert_eq!(
            g.policy["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "onus"
        );
        assert_eq!(g.policy["spec"]["failurePolicy"], "Fail");
    }
}

#[test]
fn family_mode_disabled_family_and_provider_ownership_are_respected() {
    let rbac_audit = policy(
        "a",
        json!({"serviceModel": "PaaS", "mode": "Enforce", "controls": {"rbac": {"mode": "Audit"}}}),
    );
    let names: Vec<_> = generate([&rbac_audit], now(), None).into_keys().collect();
    assert_eq!(names, ["onus-dat-01", "onus-net-05", "onus-wkl-10"]);
    let disabled = policy(
        "b",
        json!({"serviceModel": "PaaS", "mode": "Enforce", "controls": {
            "rbac": {"enabled": false}, "network": {"enabled": false}, "podSecurity": {"mode": "Audit"},
            "data": {"mode": "Audit"}}}),
    );
    assert!(generate([&disabled], now(), None).is_empty());
    let provider = policy(
        "c",
        json!({"serviceModel": "PaaS", "mode": "Enforce", "responsibilities": [
            {"control": "IAM-07", "owner": "Provider", "reason": "managed"}]}),
    );
    let names: Vec<_> = generate([&provider], now(), None).into_keys().collect();
    assert_eq!(
        names,
        [
            "onus-dat-01",
            "onus-iam-01",
            "onus-iam-02",
            "onus-iam-05",
            "onus-net-05",
            "onus-wkl-10"
        ]
    );
    // Audit in the family but Warn asked: warned.
    let warned = policy(
        "d",
        json!({"serviceModel": "PaaS", "mode": "Enforce", "admission": "Warn",
               "controls": {"rbac": {"mode": "Audit"}}}),
    );
    assert_eq!(
        action_for(&warned.spec, "IAM-01"),
        Some(AdmissionAction::Warn)
    );
    assert_eq!(
        action_for(&warned.spec, "NET-05"),
        Some(AdmissionAction::Deny)
    );
    assert_eq!(action_for(&warned.spec, "NET-03"), None);
}

#[test]
fn policies_merge_into_one_object_per_control_with_a_validation_each() {
    let b = policy(
        "b-policy",
        json!({"serviceModel": "PaaS", "mode": "Enforce",
               "controls": {"rbac": {"clusterAdminSubjects": [{"kind": "Group", "name": "ops"}]}}}),
    );
    let a = policy(
        "a-policy",
        json!({"serviceModel": "PaaS", "mode": "Enforce",
               "controls": {"rbac": {"clusterAdminSubjects": [{"kind": "Group", "name": "platform-admins"}]}}}),
    );
    let one = generate([&b, &a], now(), None);
    let other = generate([&a, &b], now(), None);
    assert_eq!(one, other, "deterministic whatever the order");
    let iam01 = &one["onus-iam-01"];
    assert_eq!(iam01.policies, ["a-policy", "b-policy"]);
    let e = expressions(iam01);
    assert_eq!(e.len(), 2);
    assert!(e[0].contains("\"platform-admins\"") && !e[0].contains("\"ops\""));
    assert!(e[1].contains("\"ops\""));
    let messages: Vec<_> = iam01.policy["spec"]["validations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        messages[0].contains("IAM-01") && messages[0].contains("ResponsibilityPolicy a-policy")
    );
    assert!(messages[0].contains("exception"));
    assert_eq!(
        iam01.policy["metadata"]["annotations"]["onus.dev/policies"],
        "a-policy,b-policy"
    );
}

#[test]
fn the_cluster_and_onus_are_never_locked_out() {
    let p = policy("p", json!({"serviceModel": "PaaS", "mode": "Enforce"}));
    let generated = generate([&p], now(), Some("system:serviceaccount:onus-system:onus"));
    for g in generated.values() {
        let condition = g.policy["spec"]["matchConditions"][0]["expression"]
            .as_str()
            .unwrap();
        for who in [
            "'system:masters'",
            "\"system:kube-controller-manager\"",
            "\"system:apiserver\"",
            "'system:serviceaccount:kube-system:'",
            "\"system:serviceaccount:onus-system:onus\"",
        ] {
            assert!(condition.contains(who), "{who} not exempt in {condition}");
        }
        assert!(condition.starts_with("!("));
        assert_eq!(
            g.binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(SYSTEM_NAMESPACES)
        );
    }
    let system = policy(
        "s",
        json!({"serviceModel": "PaaS", "mode": "Enforce", "includeSystemNamespaces": ["kube-public"]}),
    );
    let g = &generate([&system], now(), None)["onus-iam-01"];
    assert_eq!(
        g.binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["kube-system", "kube-node-lease"])
    );
}

#[test]
fn only_active_exceptions_of_the_control_are_generated() {
    let p = policy(
        "p",
        json!({"serviceModel": "PaaS", "mode": "Enforce", "exceptions": [
            {"controls": ["IAM-01"], "resources": [{"kind": "ClusterRoleBinding", "name": "break-glass"}],
             "reason": "incident access"},
            {"controls": ["IAM-01"], "namespaces": ["lab"], "reason": "lab", "expires": "2025-01-01T00:00:00Z"},
            {"controls": ["IAM-07"], "namespaces": ["web"], "reason": "public"},
        ]}),
    );
    let generated = generate([&p], now(), None);
    let iam01 = expressions(&generated["onus-iam-01"]).join("");
    assert!(iam01.contains("\"clusterrolebinding\"") && iam01.contains("\"break-glass\""));
    assert!(!iam01.contains("\"lab\""), "expired exception generated");
    let iam07 = expressions(&generated["onus-iam-07"]).join("");
    assert!(iam07.contains("\"web\"") && !iam07.contains("break-glass"));
}

#[test]
fn selectors_and_exclusions_become_namespace_conditions() {
    let p = policy(
        "p",
        json!({"serviceModel": "PaaS", "mode": "Enforce", "excludedNamespaces": ["sandbox"],
               "namespaceSelector": {"matchLabels": {"team": "shop"}, "matchExpressions": [
                   {"key": "env", "operator": "In", "values": ["prod", "stage"]},
                   {"key": "tier", "operator": "NotIn", "values": ["test"]},
                   {"key": "owner", "operator": "Exists"},
                   {"key": "legacy", "operator": "DoesNotExist"}]}}),
    );
    let g = governs(&p.spec);
    for part in [
        "\"sandbox\"",
        "\"kube-system\"",
        "(\"team\" in l && l[\"team\"] == \"shop\")",
        "(\"env\" in l && l[\"env\"] in [\"prod\", \"stage\"])",
        "(!(\"tier\" in l) || !(l[\"tier\"] in [\"test\"]))",
        "(\"owner\" in l)",
        "!(\"legacy\" in l)",
    ] {
        let g = g.replace("namespaceObject.metadata.?labels.orValue({})", "l");
        assert!(g.contains(part), "{part} not in {g}");
    }
}

#[test]
fn literals_are_escaped() {
    assert_eq!(lit("a'b\"c\\"), "\"a'b\\\"c\\\\\"");
}

#[test]
fn status_counts_a_control_only_when_its_object_is_in_place() {
    let p = policy("p", json!({"serviceModel": "PaaS", "mode": "Enforce"}));
    let in_place: BTreeSet<String> =
        ["onus-iam-01".to_string(), "onus-iam-07-warn".to_string()].into();
    let status = status_of(&p, &in_place);
    assert_eq!(
        status.into_iter().collect::<Vec<_>>(),
        [("IAM-01", AdmissionAction::Deny)]
    );
}

#[test]
fn a_deleted_policy_wants_nothing_and_an_invalid_one_keeps_its_last_enforced_spec() {
    let mut deleting = policy("gone", json!({"serviceModel": "PaaS", "mode": "Enforce"}));
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
    );
    assert!(generate([&deleting], now(), None).is_empty());
    assert!(!wants_admission(&deleting));

    // An invalid edit (a family in Enforce under an Audit policy) holds the last valid
    // Enforce spec.
    let mut invalid = policy(
        "held",
        json!({"serviceModel": "PaaS", "mode": "Audit", "controls": {"rbac": {"mode": "Enforce"}}}),
    );
    assert!(validate(&invalid.spec).is_err());
    assert!(generate([&invalid], now(), None).is_empty());
    invalid.status = Some(crate::crd::ResponsibilityPolicyStatus {
        enforced_spec: Some(crate::crd::EnforcedSpec {
            generation: 1,
            spec: policy("held", json!({"serviceModel": "PaaS", "mode": "Enforce"})).spec,
        }),
        ..Default::default()
    });
    assert_eq!(
        names_for(&invalid),
        [
            "onus-iam-01",
            "onus-iam-02",
            "onus-iam-05",
            "onus-iam-07",
            "onus-wkl-10",
            "onus-net-05",
            "onus-dat-01"
        ]
    );
}

#[test]
fn admission_counts_what_status_counts_for_iam_01_02_05() {
    let p = policy("p", json!({"serviceModel": "PaaS", "mode": "Enforce"}));
    let spec = &p.spec;
    // IAM-01: admin and edit bound cluster-wide (status: "admin cluster-wide (warning)").
    assert!(violation(spec, "IAM-01").contains("['admin', 'edit']"));
    // IAM-02: `*/scale` is every resource's scale subresource.
    assert!(violation(spec, "IAM-02").contains("x.startsWith('*/')"));
    // IAM-05: the verb `*` grants escalate, bind and impersonate.
    let iam05 = violation(spec, "IAM-05");
    assert!(iam05.contains("['escalate', 'bind', '*']"), "{iam05}");
    assert!(iam05.contains("'serviceaccounts'"), "{iam05}");
}

/// A long allow-list makes a check longer than the API server accepts: onus refuses to write
/// it (naming the policy), rather than have the write refused; a short one is written.
#[test]
fn a_check_longer_than_the_api_server_accepts_is_too_large() {
    let subjects = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"kind": "Group", "name": format!("team-{i:05}")}))
            .collect()
    };
    let small = policy(
        "small",
        json!({"serviceModel": "PaaS", "mode": "Enforce",
               "controls": {"rbac": {"clusterAdminSubjects": subjects(100)}}}),
    );
    let huge = policy(
        "huge",
        json!({"serviceModel": "PaaS", "mode": "Enforce",
               "controls": {"rbac": {"clusterAdminSubjects": subjects(10_000)}}}),
    );
    let generated = generate([&small], now(), None);
    assert!(generated.values().all(|g| too_large(g).is_none()));
    let generated = generate([&small, &huge], now(), None);
    let why = too_large(&generated["onus-iam-01"]).expect("too large");
    assert!(why.contains("ResponsibilityPolicy huge"), "{why}");
    assert!(why.contains("100000"), "{why}");
    // IAM-07 has no allow-list: it stays writable.
    assert!(too_large(&generated["onus-iam-07"]).is_none());
}

#[test]
fn aggregating_cluster_roles_and_mirror_pods_are_judged() {
    let p = policy("p", json!({"serviceModel": "PaaS", "mode": "Enforce"}));
    let generated = generate([&p], now(), None);
    for control in ["iam-02", "iam-05"] {
        let g = &generated[&format!("onus-{control}")];
        assert!(expressions(g)[0].contains(AGGREGATES), "{control}");
        let unchanged = g.policy["spec"]["variables"][0]["expression"]
            .as_str()
            .unwrap();
        assert!(unchanged.contains("aggregationRule"), "{unchanged}");
    }
    let wkl = expressions(&generated["onus-wkl-10"]);
    assert!(wkl[0].contains(&format!("!({MIRROR_POD})")), "{wkl:?}");
}

/// DAT-01 follows the `data` family's mode, covers every container list of bare Pods and of
/// every pod template kind (and the ephemeral containers subresource), judges an update by what
/// it adds, and admits kubelets' mirror Pods as WKL-10 does.
#[test]
fn secret_env_is_checked_in_every_container_list_of_every_pod_template_kind() {
    let enforce = policy("p", json!({"serviceModel": "PaaS", "mode": "Enforce"}));
    assert_eq!(
        action_for(&enforce.spec, "DAT-01"),
        Some(AdmissionAction::Deny)
    );
    let data_audit = policy(
        "q",
        json!({"serviceModel": "PaaS", "mode": "Enforce", "controls": {"data": {"mode": "Audit"}}}),
    );
    assert_eq!(action_for(&data_audit.spec, "DAT-01"), None);
    let warned = policy(
        "r",
        json!({"serviceModel": "PaaS", "mode": "Enforce", "admission": "Warn",
               "controls": {"data": {"mode": "Audit"}}}),
    );
    assert_eq!(
        action_for(&warned.spec, "DAT-01"),
        Some(AdmissionAction::Warn)
    );
    let disabled = policy(
        "s",
        json!({"serviceModel": "PaaS", "mode": "Enforce", "controls": {"data": {"enabled": false}}}),
    );
    assert_eq!(action_for(&disabled.spec, "DAT-01"), None);

    let generated = generate([&enforce], now(), None);
    let g = &generated["onus-dat-01"];
    let rules = &g.policy["spec"]["matchConstraints"]["resourceRules"];
    let matched: BTreeSet<(String, String)> = rules
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            assert_eq!(r["operations"], json!(["CREATE", "UPDATE"]));
            let groups: Vec<String> = serde_json::from_value(r["apiGroups"].clone()).unwrap();
            let resources: Vec<String> = serde_json::from_value(r["resources"].clone()).unwrap();
            assert_eq!(groups.len(), 1, "one group per rule: {r}");
            resources.into_iter().map(move |x| (groups[0].clone(), x))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("", "pods"),
        ("", "pods/ephemeralcontainers"),
        ("", "replicationcontrollers"),
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("apps", "replicasets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
    ]
    .iter()
    .map(|(g, r)| (g.to_string(), r.to_string()))
    .collect();
    assert_eq!(matched, expected);

    let variables = g.policy["spec"]["variables"].as_array().unwrap();
    let names: Vec<&str> = variables
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    // Each variable only reads those before it.
    assert_eq!(
        names,
        ["containers", "oldContainers", "secretEnvAdded", "unchanged"]
    );
    let containers = variables[0]["expression"].as_str().unwrap();
    for path in [
        "object.?spec.?containers",
        "object.?spec.?initContainers",
        "object.?spec.?ephemeralContainers",
        "object.?spec.?template.?spec.?containers",
        "object.?spec.?template.?spec.?initContainers",
        "object.?spec.?jobTemplate.?spec.?template.?spec.?containers",
        "object.?spec.?jobTemplate.?spec.?template.?spec.?initContainers",
    ] {
        assert!(containers.contains(path), "{path} not in {containers}");
    }
    assert!(!containers.contains("oldObject"));
    let old = variables[1]["expression"].as_str().unwrap();
    assert!(
        old.starts_with("request.operation == 'UPDATE' ? ") && old.ends_with(" : []"),
        "{old}"
    );
    assert_eq!(old.matches("oldObject").count(), 18, "{old}");
    let added = variables[2]["expression"].as_str().unwrap();
    for part in [
        "e.?valueFrom.?secretKeyRef.hasValue()",
        "f.?secretRef.hasValue()",
        "o.name == c.name",
    ] {
        assert!(added.contains(part), "{part} not in {added}");
    }
    let e = expressions(g);
    assert!(e[0].contains("variables.secretEnvAdded"), "{e:?}");
    assert!(e[0].contains(&format!("!({MIRROR_POD})")), "{e:?}");
    assert!(message("DAT-01", "p").contains("DAT-01 (Secrets mounted as files, not env vars)"));

    // Merged as the others: one validation per policy, each with its own exceptions.
    let excepting = policy(
        "e",
        json!({"serviceModel": "PaaS", "mode": "Enforce", "exceptions": [
            {"controls": ["DAT-01"], "resources": [{"kind": "Deployment", "name": "legacy"}],
             "reason": "moving to a volume"}]}),
    );
    let merged = generate([&enforce, &excepting], now(), None);
    let g = &merged["onus-dat-01"];
    assert_eq!(g.policies, ["e", "p"]);
    let e = expressions(g);
    assert_eq!(e.len(), 2);
    assert!(e[0].contains("\"deployment\"") && e[0].contains("\"legacy\""));
    assert!(!e[1].contains("\"legacy\""));
}
