//! Checks of a policy spec that the CRD schema cannot express. The message names the field.

use std::collections::BTreeSet;

use crate::{
    catalog::control_by_id,
    crd::{Mode, ResponsibilityPolicySpec},
};

/// Returns why the spec cannot be evaluated, naming the offending field.
pub fn validate(spec: &ResponsibilityPolicySpec) -> Result<(), String> {
    if spec.mode == Mode::Audit {
        let c = &spec.controls;
        let families = [
            ("rbac", c.rbac.mode),
            ("podSecurity", c.pod_security.mode),
            ("network", c.network.mode),
            ("serviceAccounts", c.service_accounts.mode),
            ("data", c.data.mode),
            ("audit", c.audit.mode),
        ];
        if let Some((family, _)) = families.iter().find(|(_, m)| *m == Some(Mode::Enforce)) {
            return Err(format!(
                "spec.controls.{family}.mode: Enforce needs spec.mode Enforce; a policy in Audit \
                 mode changes nothing (set spec.mode: Enforce and other families to mode: Audit)"
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, r) in spec.responsibilities.iter().enumerate() {
        if control_by_id(&r.control).is_none() {
            return Err(format!(
                "spec.responsibilities[{i}].control: unknown control {:?}",
                r.control
            ));
        }
        if !seen.insert(r.control.as_str()) {
            return Err(format!(
                "spec.responsibilities[{i}].control: {} is assigned more than once",
                r.control
            ));
        }
    }
    for (i, e) in spec.exceptions.iter().enumerate() {
        for (j, c) in e.controls.iter().enumerate() {
            if control_by_id(c).is_none() {
                return Err(format!(
                    "spec.exceptions[{i}].controls[{j}]: unknown control {c:?}"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ResponsibilityPolicySpec {
        serde_yaml::from_str(yaml).expect("fixture")
    }

    #[test]
    fn an_unknown_control_in_an_exception_names_the_field() {
        let s = spec("serviceModel: PaaS\nexceptions: [{controls: [NET-01, XYZ-99], reason: r}]");
        assert_eq!(
            validate(&s),
            Err("spec.exceptions[0].controls[1]: unknown control \"XYZ-99\"".into())
        );
    }

    #[test]
    fn a_control_may_be_reassigned_only_once() {
        let s = spec(
            "serviceModel: PaaS\nresponsibilities: [{control: NET-04, owner: Provider, reason: a}, \
             {control: NET-04, owner: Customer, reason: b}]",
        );
        assert!(validate(&s).unwrap_err().contains("responsibilities[1]"));
    }

    #[test]
    fn a_family_cannot_enforce_while_the_policy_audits() {
        let s = spec("serviceModel: PaaS\nmode: Audit\ncontrols: {network: {mode: Enforce}}");
        assert!(
            validate(&s)
                .unwrap_err()
                .starts_with("spec.controls.network.mode")
        );
        let s = spec("serviceModel: PaaS\nmode: Enforce\ncontrols: {network: {mode: Audit}}");
        assert_eq!(validate(&s), Ok(()));
    }

    #[test]
    fn a_plain_policy_is_valid() {
        assert_eq!(validate(&spec("serviceModel: IaaS")), Ok(()));
    }
}
