//! Attacks on the label plan: values onus must never come to "restore".

use std::collections::BTreeMap;

use super::*;
use crate::{
    crd::PodSecurityLevel::Restricted,
    evaluate::{PSA_AUDIT, PSA_AUDIT_VERSION, PSA_WARN, PSA_WARN_VERSION},
    podsecurity::Version,
};

fn want() -> PodSecurityWant {
    PodSecurityWant {
        level: Restricted,
        version: Version::Latest,
        forced: None,
    }
}

fn owned_keys(keys: &[&str]) -> std::collections::BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

fn labelled(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// onus labelled a namespace that had no Pod Security labels (nothing replaced, nothing to
/// restore). Then someone ran `kubectl label --overwrite ...enforce=privileged`: the Update took
/// the key from onus. Drift repair puts restricted back; the weakened value is not what onus
/// replaced, and must not be what it "restores" when it lets go.
#[test]
fn a_weakened_label_onus_repairs_is_not_remembered_as_the_value_to_restore() {
    let index = Index::default();
    let fact = NamespaceFact {
        labels: labelled(&[
            (PSA_ENFORCE, "privileged"),
            (PSA_ENFORCE_VERSION, "latest"),
            (PSA_WARN, "restricted"),
            (PSA_WARN_VERSION, "latest"),
            (PSA_AUDIT, "restricted"),
            (PSA_AUDIT_VERSION, "latest"),
        ]),
        onus_labels: true,
        // Everything onus applied except the key the overwrite took.
        onus_owned: owned_keys(&[
            PSA_ENFORCE_VERSION,
            PSA_WARN,
            PSA_WARN_VERSION,
            PSA_AUDIT,
            PSA_AUDIT_VERSION,
        ]),
        ..Default::default()
    };
    let plan = plan_labels("shop", want(), &fact, &index);
    assert_eq!(
        plan.labels.get(PSA_ENFORCE).map(String::as_str),
        Some("restricted"),
        "drift is repaired"
    );
    assert_eq!(
        plan.previous.get(PSA_ENFORCE),
        None,
        "on release onus would write enforce=privileged where there was no label"
    );
}

/// The owner's `enforce=baseline`, which onus applied too while restricted waited (ownership
/// shared), is raised once nothing would be rejected: the owner loses the field to onus, so
/// onus must remember baseline to restore it.
#[test]
fn raising_a_level_shared_with_its_owner_remembers_the_owner_value() {
    let index = Index::default();
    let fact = NamespaceFact {
        labels: labelled(&[(PSA_ENFORCE, "baseline"), (PSA_ENFORCE_VERSION, "latest")]),
        onus_labels: true,
        onus_owned: owned_keys(&[PSA_ENFORCE, PSA_ENFORCE_VERSION]),
        onus_shared: owned_keys(&[PSA_ENFORCE]),
        ..Default::default()
    };
    let plan = plan_labels("shop", want(), &fact, &index);
    assert_eq!(
        plan.labels.get(PSA_ENFORCE).map(String::as_str),
        Some("restricted")
    );
    assert_eq!(
        plan.previous.get(PSA_ENFORCE).map(String::as_str),
        Some("baseline")
    );
}

/// A label onus and another manager both apply keeps the other's value when onus lets go: a
/// forced restore of what onus once replaced would overwrite it.
#[test]
fn a_label_another_manager_also_applies_is_not_restored_over() {
    let fact = NamespaceFact {
        labels: labelled(&[(PSA_ENFORCE, "restricted")]),
        onus_labels: true,
        onus_owned: owned_keys(&[PSA_ENFORCE]),
        onus_shared: owned_keys(&[PSA_ENFORCE]),
        previous: labelled(&[(PSA_ENFORCE, "baseline")]),
        ..Default::default()
    };
    assert_eq!(restore(&fact), BTreeMap::new());
}

/// `warn=Restricted` (not a level the admission knows) warns about nothing: the admission reads
/// it as privileged. onus replaces it, and does not keep it to restore, since the admission
/// refuses a namespace write that sets an unparsable level.
#[test]
fn an_unreadable_warn_label_is_replaced_and_not_restored() {
    let index = Index::default();
    let fact = NamespaceFact {
        labels: labelled(&[(PSA_WARN, "Restricted"), (PSA_ENFORCE, "Restricted")]),
        ..Default::default()
    };
    let plan = plan_labels("shop", want(), &fact, &index);
    assert_eq!(
        plan.labels.get(PSA_WARN).map(String::as_str),
        Some("restricted")
    );
    assert_eq!(plan.previous.get(PSA_WARN), None);
    // An unreadable enforce value enforces restricted: it stays, theirs.
    assert_eq!(plan.labels.get(PSA_ENFORCE), None);
    assert_eq!(plan.enforced.as_deref(), Some("Restricted"));
}
