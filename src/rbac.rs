//! RBAC effective-grant analysis — placeholder with the agreed interface; the real analysis
//! lands from the `rbac` branch.

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};

use crate::crd::SubjectRef;

/// The RBAC objects of the cluster.
#[derive(Clone, Debug, Default)]
pub struct RbacSnapshot {
    pub roles: Vec<Arc<Role>>,
    pub cluster_roles: Vec<Arc<ClusterRole>>,
    pub role_bindings: Vec<Arc<RoleBinding>>,
    pub cluster_role_bindings: Vec<Arc<ClusterRoleBinding>>,
}

/// One effective grant that breaks an IAM control.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Finding {
    pub control: &'static str,
    pub namespace: Option<String>,
    pub subject: String,
    pub binding: String,
    pub detail: String,
}

impl Finding {
    /// Short text for status examples.
    pub fn example(&self) -> String {
        format!("{}: {}", self.binding, self.subject)
    }
}

/// Evaluates IAM-01..IAM-08.
pub fn evaluate(_snapshot: &RbacSnapshot, _allowed: &[SubjectRef]) -> Vec<Finding> {
    Vec::new()
}
