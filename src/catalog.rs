//! The control catalog (`shared/CONTROLS.md`) as data: ids, titles, families, who owns each
//! control under each service model, what onus may fix, and the framework items it maps to.

use crate::crd::{Owner, ServiceModel};

/// The family a control belongs to; each maps to one block of `spec.controls`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Rbac,
    ServiceAccounts,
    PodSecurity,
    Network,
    Data,
    Audit,
}

impl Family {
    /// The field name under `spec.controls`.
    pub fn field(self) -> &'static str {
        match self {
            Family::Rbac => "rbac",
            Family::ServiceAccounts => "serviceAccounts",
            Family::PodSecurity => "podSecurity",
            Family::Network => "network",
            Family::Data => "data",
            Family::Audit => "audit",
        }
    }
}

/// What onus may change to fix a control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fix {
    /// Applied automatically in Enforce mode.
    Safe,
    /// Never changed; reported only.
    Report,
}

/// One control of the catalog.
#[derive(Debug)]
pub struct Control {
    pub id: &'static str,
    pub title: &'static str,
    pub family: Family,
    pub fix: Fix,
    /// Default owner under IaaS, PaaS, SaaS.
    pub owners: [Owner; 3],
    /// Whether the Kubernetes API shows enough to check it.
    pub observable: bool,
    pub frameworks: &'static [&'static str],
}

impl Control {
    /// The owner the service model assigns by default.
    pub fn default_owner(&self, model: ServiceModel) -> Owner {
        match model {
            ServiceModel::IaaS => self.owners[0],
            ServiceModel::PaaS => self.owners[1],
            ServiceModel::SaaS => self.owners[2],
        }
    }
}

use Owner::{Customer as C, Provider as P, Shared as S};

const fn control(
    id: &'static str,
    title: &'static str,
    family: Family,
    fix: Fix,
    owners: [Owner; 3],
    frameworks: &'static [&'static str],
) -> Control {
    Control {
        id,
        title,
        family,
        fix,
        owners,
        observable: true,
        frameworks,
    }
}

const fn informational(
    id: &'static str,
    title: &'static str,
    family: Family,
    owners: [Owner; 3],
    frameworks: &'static [&'static str],
) -> Control {
    Control {
        id,
        title,
        family,
        fix: Fix::Report,
        owners,
        observable: false,
        frameworks,
    }
}

use Family::*;
use Fix::*;

/// Every control onus knows, in status order.
#[rustfmt::skip]
pub static CATALOG: &[Control] = &[
    control("IAM-01", "cluster-admin only for allow-listed subjects", Rbac, Report, [C, C, C], &["CIS 5.1.1", "EKS/GKE/AKS 4.1.1"]),
    control("IAM-02", "No wildcard rules", Rbac, Report, [C, C, C], &["CIS 5.1.3"]),
    control("IAM-03", "Secret read access is minimal", Rbac, Report, [C, C, C], &["CIS 5.1.2"]),
    control("IAM-04", "Pod creation and exec are minimal", Rbac, Report, [C, C, C], &["CIS 5.1.4"]),
    control("IAM-05", "No privilege-escalation verbs", Rbac, Report, [C, C, C], &["CIS 5.1.8"]),
    control("IAM-06", "No access to dangerous resources", Rbac, Report, [C, C, C], &["CIS 5.1.9-5.1.13"]),
    control("IAM-07", "No bindings for anonymous or every-user groups", Rbac, Report, [C, C, C], &["GKE 4.1.8-4.1.10"]),
    control("IAM-08", "No system:masters grants", Rbac, Report, [C, C, C], &["CIS 5.1.7"]),
    control("IAM-09", "Default ServiceAccount token not mounted", ServiceAccounts, Safe, [C, C, C], &["CIS 5.1.5-5.1.6"]),
    control("WKL-01", "Pod Security Admission labels on every selected namespace", PodSecurity, Safe, [C, C, C], &["CIS 5.2.1", "GKE 4.2.1"]),
    control("WKL-02", "No host namespaces or host access", PodSecurity, Report, [C, C, P], &["CIS 5.2.3-5.2.5", "CIS 5.2.10-5.2.12"]),
    control("WKL-03", "No privileged containers", PodSecurity, Report, [C, C, P], &["CIS 5.2.2"]),
    control("WKL-04", "Capabilities minimal", PodSecurity, Report, [C, C, P], &["CIS 5.2.8-5.2.9"]),
    control("WKL-05", "Kernel hardening fields", PodSecurity, Report, [C, C, C], &["PSS baseline"]),
    control("WKL-06", "No privilege escalation", PodSecurity, Report, [C, C, C], &["CIS 5.2.6"]),
    control("WKL-07", "Runs as non-root", PodSecurity, Report, [C, C, C], &["CIS 5.2.7"]),
    control("WKL-08", "Seccomp profile set", PodSecurity, Report, [C, C, C], &["CIS 5.6.2"]),
    control("WKL-09", "Restricted volume types", PodSecurity, Report, [C, C, C], &["PSS restricted"]),
    control("WKL-10", "No customer workloads in default", PodSecurity, Report, [C, C, C], &["CIS 5.6.4"]),
    control("NET-01", "Namespaces deny ingress by default", Network, Safe, [C, C, C], &["CIS 5.3.2", "NSA"]),
    control("NET-02", "Namespaces deny egress by default, DNS allowed", Network, Safe, [C, C, C], &["NSA"]),
    control("NET-03", "No allow-all rules", Network, Report, [C, C, C], &["NSA"]),
    control("NET-04", "NetworkPolicy is enforced by the CNI", Network, Report, [C, S, P], &["CIS 5.3.1"]),
    control("NET-05", "No Service externalIPs", Network, Report, [C, C, C], &[]),
    control("DAT-01", "Secrets mounted as files, not env vars", Data, Report, [C, C, C], &["CIS 5.4.1"]),
    informational("DAT-02", "Encryption of Secrets at rest with a customer key", Data, [C, S, S], &["EKS 5.3.1"]),
    control("AUD-01", "Pod Security audit/warn visibility", PodSecurity, Safe, [C, C, C], &["PSS"]),
    informational("AUD-02", "Control-plane audit logs enabled", Audit, [C, S, S], &["EKS 2.1.1"]),
];

/// Looks a control up by id.
pub fn control_by_id(id: &str) -> Option<&'static Control> {
    CATALOG.iter().find(|c| c.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let mut ids: Vec<_> = CATALOG.iter().map(|c| c.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), CATALOG.len());
        for id in ids {
            let (family, number) = id.split_once('-').expect("FAM-NN");
            assert_eq!(family.len(), 3, "{id}");
            assert_eq!(number.len(), 2, "{id}");
        }
    }

    #[test]
    fn serverless_models_hand_host_access_to_the_provider() {
        let wkl02 = control_by_id("WKL-02").expect("WKL-02");
        assert_eq!(wkl02.default_owner(ServiceModel::IaaS), Owner::Customer);
        assert_eq!(wkl02.default_owner(ServiceModel::PaaS), Owner::Customer);
        assert_eq!(wkl02.default_owner(ServiceModel::SaaS), Owner::Provider);
    }

    #[test]
    fn the_cni_is_shared_on_managed_kubernetes() {
        let net04 = control_by_id("NET-04").expect("NET-04");
        assert_eq!(net04.default_owner(ServiceModel::PaaS), Owner::Shared);
    }

    #[test]
    fn unobservable_controls_are_listed_for_a_complete_matrix() {
        let unobservable: Vec<_> = CATALOG
            .iter()
            .filter(|c| !c.observable)
            .map(|c| c.id)
            .collect();
        assert_eq!(unobservable, ["DAT-02", "AUD-02"]);
    }
}
