//! Pod Security labels read as the admission reads them (its `PolicyToEvaluate`): a level it
//! cannot parse enforces restricted but leaves `warn` and `audit` privileged; a version it
//! cannot parse means latest.

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn an_invalid_enforce_level_enforces_restricted() {
    let ns = labels(&[(PSA_ENFORCE, "Restricted")]);
    assert!(psa_enforced(
        &ns,
        PodSecurityLevel::Restricted,
        Version::Latest
    ));
    assert!(psa_enforced(
        &ns,
        PodSecurityLevel::Baseline,
        Version::Latest
    ));
}

#[test]
fn an_invalid_enforce_level_is_stricter_than_baseline_and_as_strict_as_restricted() {
    let invalid = "Restricted".to_string();
    assert_eq!(strictness(Some(&invalid)), 2);
    assert_eq!(strictness(Some(&"".to_string())), 2);
    assert_eq!(strictness(Some(&"privileged".to_string())), 0);
    assert_eq!(strictness(None), 0);
}

#[test]
fn an_invalid_warn_or_audit_level_is_privileged() {
    let ns = labels(&[(PSA_WARN, "Baseline"), (PSA_AUDIT, "restricted ")]);
    assert_eq!(mode_strictness(&ns, PSA_WARN), 0);
    assert_eq!(mode_strictness(&ns, PSA_AUDIT), 0);
    let ns = labels(&[(PSA_ENFORCE, "Baseline")]);
    assert_eq!(mode_strictness(&ns, PSA_ENFORCE), 2);
}

#[test]
fn valid_levels_read_the_same_in_every_mode() {
    for (value, want) in [("privileged", 0), ("baseline", 1), ("restricted", 2)] {
        for mode in [PSA_ENFORCE, PSA_WARN, PSA_AUDIT] {
            assert_eq!(mode_strictness(&labels(&[(mode, value)]), mode), want);
        }
    }
}

#[test]
fn an_invalid_enforce_version_means_latest() {
    for version in ["v1.x", "1.30", "v1.030", "V1.30", "v2.0", ""] {
        let ns = labels(&[(PSA_ENFORCE, "restricted"), (PSA_ENFORCE_VERSION, version)]);
        assert!(
            psa_enforced(&ns, PodSecurityLevel::Restricted, Version::Latest),
            "enforce-version {version:?}"
        );
    }
}

#[test]
fn an_older_valid_enforce_version_still_fails_a_newer_policy_version() {
    let ns = labels(&[(PSA_ENFORCE, "Restricted"), (PSA_ENFORCE_VERSION, "v1.20")]);
    assert!(!psa_enforced(
        &ns,
        PodSecurityLevel::Baseline,
        Version::Minor(30)
    ));
    assert!(psa_enforced(
        &ns,
        PodSecurityLevel::Baseline,
        Version::Minor(20)
    ));
}

#[test]
fn privileged_enforcement_does_not_enforce_baseline() {
    let ns = labels(&[(PSA_ENFORCE, "privileged")]);
    assert!(!psa_enforced(
        &ns,
        PodSecurityLevel::Baseline,
        Version::Latest
    ));
}

#[test]
fn an_invalid_warn_label_does_not_count_as_visibility() {
    let valid = labels(&[(PSA_WARN, "baseline"), (PSA_AUDIT, "privileged")]);
    assert!(psa_visible(&valid));
    let invalid = labels(&[(PSA_WARN, "Baseline"), (PSA_AUDIT, "restricted")]);
    assert!(!psa_visible(&invalid));
    assert!(!psa_visible(&labels(&[(PSA_WARN, "baseline")])));
}
