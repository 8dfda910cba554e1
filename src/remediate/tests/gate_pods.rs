//! The enforce gate and the running Pods.

use super::*;
use crate::index::testing::{debugged_spec, deployment, deployment_pod, restricted_spec};

#[test]
fn the_gate_waits_for_a_running_pod_that_fails_what_its_template_passes() {
    let mut index = cluster(&[]);
    deployment(&mut index, "shop", "web", restricted_spec());
    deployment_pod(&mut index, "shop", "web", "web-1", debugged_spec());
    deployment_pod(&mut index, "shop", "web", "web-2", restricted_spec());
    privileged_deployment(&mut index);
    // A Pod of the privileged Deployment fails just what its template fails: named once.
    deployment_pod(
        &mut index,
        "shop",
        "old",
        "old-1",
        json!({"containers": [{"name": "app", "securityContext": {"privileged": true}}]}),
    );
    assert_eq!(
        rejected(
            "shop",
            PodSecurityLevel::Restricted,
            Version::Latest,
            &index
        ),
        ["Deployment/shop/old", "Pod/shop/web-1"]
    );

    index
        .workloads_mut(facts::WorkloadKind::Deployment)
        .delete(&Key::new(Some("shop"), "old"));
    index.owned_pods.delete(&Key::new(Some("shop"), "old-1"));
    let plan = plan_labels("shop", want(Restricted, None), &shop(&[], &[]), &index);
    assert_eq!(plan.labels.get(PSA_ENFORCE), None);
    assert_eq!(
        plan.waiting.map(|w| w.objects),
        Some(vec!["Pod/shop/web-1".to_string()])
    );
    // The ReplicaSet replaced the debugged Pod with a clean one.
    index.owned_pods.delete(&Key::new(Some("shop"), "web-1"));
    let plan = plan_labels("shop", want(Restricted, None), &shop(&[], &[]), &index);
    assert_eq!(
        plan.labels.get(PSA_ENFORCE).map(String::as_str),
        Some("restricted")
    );
}

#[test]
fn latest_is_the_servers_latest() {
    let mut index = cluster(&[]);
    // A sysctl the admission allows from v1.27 on.
    deployment(
        &mut index,
        "shop",
        "tuned",
        json!({"securityContext": {"sysctls": [{"name": "net.ipv4.ip_local_reserved_ports", "value": "1"}]},
               "containers": [{"name": "app"}]}),
    );
    assert_eq!(
        rejected("shop", Baseline, Version::Latest, &index),
        Vec::<String>::new()
    );
    index.server_minor = Some(26);
    assert_eq!(
        rejected("shop", Baseline, Version::Latest, &index),
        ["Deployment/shop/tuned"]
    );
    // A pin newer than the server is the server's latest too.
    assert_eq!(
        rejected("shop", Baseline, Version::Minor(30), &index),
        ["Deployment/shop/tuned"]
    );
}
