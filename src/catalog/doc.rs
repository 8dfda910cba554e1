//! `docs/controls.md`, generated from the catalog (`cargo run --bin catalog-doc`, `make docs`);
//! a test fails when the committed file drifts from it.

use std::fmt::Write;

use super::{CATALOG, CHECKS, Fix};
use crate::crd::{Owner, ServiceModel};

fn owner(o: Owner) -> &'static str {
    match o {
        Owner::Customer => "Customer",
        Owner::Provider => "Provider",
        Owner::Shared => "Shared",
    }
}

/// The control catalog as Markdown.
pub fn controls_markdown() -> String {
    let mut out = String::new();
    out.push_str(
        "<!-- Generated from src/catalog.rs by `make docs` (cargo run --bin catalog-doc); \
         do not edit. -->\n\
         # Controls\n\n\
         Every control onus evaluates, in the order `status.controls` lists them. **Owner** is \
         the default owner under each service model (`spec.serviceModel`); \
         `spec.responsibilities` overrides it per control, and a control the customer owns by \
         default that a policy assigns away or disables raises `ResponsibilityGap`. A control \
         owned by the provider reports `ProviderOwned`, one the Kubernetes API cannot show \
         reports `NotObservable`. **Enforce** says what Enforce mode changes: *Safe* controls \
         are remediated automatically, *Report* controls never are; *prevented at admission* \
         controls also get a generated ValidatingAdmissionPolicy that denies new violations \
         (families in Enforce) or warns about them (Audit with `admission: Warn`). \
         **Settings** names the policy fields and Pod Security versions that change the \
         check. **Severity** is how grave a failure is (critical, high, medium, low, info); \
         policy reports carry it in each result's `severity`.\n\n\
         Workloads are Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs \
         and bare Pods; container checks cover init, regular and \
         ephemeral containers. `kube-system`, `kube-public` and `kube-node-lease` are never \
         governed unless a policy lists them in `includeSystemNamespaces`.\n\n",
    );
    out.push_str(
        "| Id | Title | Family | Severity | Checks | Settings | Owner IaaS / PaaS / SaaS | Enforce | Frameworks |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for (control, check) in CATALOG.iter().zip(CHECKS) {
        let owners = [ServiceModel::IaaS, ServiceModel::PaaS, ServiceModel::SaaS]
            .map(|m| owner(control.default_owner(m)))
            .join(" / ");
        let mut fix = match (control.fix, control.observable) {
            (Fix::Safe, _) => "Safe",
            (Fix::Report, true) => "Report",
            (Fix::Report, false) => "Report (not observable)",
        }
        .to_string();
        if crate::admission::PREVENTABLE.contains(&control.id) {
            let _ = write!(
                fix,
                "; prevented at admission (`{}`)",
                crate::admission::object_name(control.id, crate::crd::AdmissionAction::Deny)
            );
        }
        let frameworks = if control.frameworks.is_empty() {
            "—".to_string()
        } else {
            control.frameworks.join("; ")
        };
        let gates = if check.gates.is_empty() {
            "—"
        } else {
            check.gates
        };
        let _ = writeln!(
            out,
            "| {} | {} | `{}` | {} | {} | {} | {} | {} | {} |",
            control.id,
            control.title,
            control.family.field(),
            control.severity().as_str(),
            check.checks,
            gates,
            owners,
            fix,
            frameworks
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_controls_doc_matches_the_catalog() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/controls.md");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == super::controls_markdown(),
            "docs/controls.md is stale: run `make docs` and commit the result"
        );
    }

    #[test]
    fn every_row_names_the_catalog_severity() {
        let doc = super::controls_markdown();
        for control in super::CATALOG {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| {} |", control.id)))
                .unwrap_or_else(|| panic!("no row for {}", control.id));
            let cells: Vec<&str> = row.split(" | ").collect();
            assert_eq!(cells.get(3), Some(&control.severity().as_str()), "{row}");
        }
    }
}
