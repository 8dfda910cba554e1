//! The `ResponsibilityPolicy` API (`onus.dev/v1alpha1`, cluster-scoped, short name `rp`).
//!
//! Validation lives in the schema wherever the API server can enforce it (enums, patterns,
//! required reasons, CEL rules), so `kubectl apply` refuses a bad policy with a clear message.
//! What the schema cannot express is checked in [`crate::validate`] and reported as
//! `Ready=False, reason=InvalidSpec`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The customer side of the Shared Responsibility Model for a set of namespaces.
// kube's printcolumn(...) repeats `type_ = "string"`; clippy reads that as a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "onus.dev",
    version = "v1alpha1",
    kind = "ResponsibilityPolicy",
    shortname = "rp",
    category = "onus",
    status = "ResponsibilityPolicyStatus",
    doc = "ResponsibilityPolicy names the cloud service model, the namespaces it governs and the \
           customer-owned security controls onus checks (and, in Enforce mode, fixes) there.",
    printcolumn(
        name = "Model",
        type_ = "string",
        json_path = ".spec.serviceModel",
        description = "Cloud service model"
    ),
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.mode",
        description = "Audit or Enforce"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "False while the spec is invalid (reason InvalidSpec)"
    ),
    printcolumn(
        name = "Enforced",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Enforced\")].status",
        description = "Enforce mode: every safe remediation is in place; empty when the policy audits"
    ),
    printcolumn(
        name = "Compliant",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Compliant\")].status",
        description = "Every customer-owned control passes"
    ),
    printcolumn(
        name = "Violations",
        type_ = "integer",
        json_path = ".status.summary.violations",
        description = "Violations of the failing customer-owned controls"
    ),
    printcolumn(
        name = "Gap",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"ResponsibilityGap\")].status",
        priority = 1,
        description = "ResponsibilityGap: a control the customer owns under the model is disabled or assigned away"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ResponsibilityPolicySpec {
    /// Cloud service model; decides which controls the customer owns by default.
    pub service_model: ServiceModel,

    /// Audit only reports; Enforce also applies the safe remediations.
    #[serde(default)]
    pub mode: Mode,

    /// Namespaces this policy governs; empty or absent selects every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(
        "!has(self.matchExpressions) || self.matchExpressions.all(e, \
         (e.operator in ['In', 'NotIn'] && has(e.values) && size(e.values) > 0) || \
         (e.operator in ['Exists', 'DoesNotExist'] && (!has(e.values) || size(e.values) == 0)))"
    ).message("matchExpressions: operator must be In or NotIn with values, or Exists or DoesNotExist without values"))]
    pub namespace_selector: Option<LabelSelector>,

    /// Namespaces never governed, in addition to Kubernetes' own (kube-system, kube-public,
    /// kube-node-lease), which are always excluded unless listed in includeSystemNamespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_namespaces: Vec<String>,

    /// Kubernetes' own namespaces this policy governs all the same. Off by default: an Enforce
    /// policy there can cut off cluster DNS and the CNI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set", "items" = {"type": "string", "enum": SYSTEM_NAMESPACES}))]
    pub include_system_namespaces: Vec<String>,

    /// Per-family settings of the controls.
    #[serde(default)]
    pub controls: Controls,

    /// Explicit ownership overrides; shown in status next to the model default. One per control.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["control"]))]
    pub responsibilities: Vec<Responsibility>,

    /// Time-limited, justified exemptions from controls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<Exception>,

    /// `Warn`: the controls onus can check at admission (docs/controls.md) get a generated
    /// ValidatingAdmissionPolicy with `validationActions: [Warn, Audit]` in the families this
    /// policy audits, so users see a warning before anything is denied. Absent: families in
    /// Audit generate none. Families in Enforce always generate them with `[Deny]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<AdmissionMode>,
}

/// Admission checks in Audit mode.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum AdmissionMode {
    /// Generated ValidatingAdmissionPolicies warn (and audit-annotate), never deny.
    Warn,
}

/// How a control is checked at admission by the ValidatingAdmissionPolicy onus generates.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum AdmissionAction {
    /// Prevented: a request that would violate it is denied.
    Deny,
    /// Warned: such a request is admitted with a warning.
    Warn,
}

/// Namespaces that belong to Kubernetes itself: never governed unless a policy names them in
/// `includeSystemNamespaces`.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// Schema of a control id: one of the catalog's, so `kubectl apply` refuses a typo.
fn control_id(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": control_ids()})
}

/// Schema of a non-empty list of control ids.
fn control_ids_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array", "minItems": 1,
        "items": {"type": "string", "enum": control_ids()},
    })
}

fn control_ids() -> Vec<&'static str> {
    crate::catalog::CATALOG.iter().map(|c| c.id).collect()
}

/// Cloud service model.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ServiceModel {
    /// Self-managed cluster on VMs: the customer owns everything above the hypervisor.
    IaaS,
    /// Managed control plane (EKS, GKE Standard, AKS).
    PaaS,
    /// Managed nodes too (GKE Autopilot, EKS on Fargate).
    SaaS,
}

/// What onus does about failing controls.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Mode {
    /// Evaluate and report; change nothing.
    #[default]
    Audit,
    /// Evaluate, report and apply the safe remediations.
    Enforce,
}

/// Who is responsible for a control.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Owner {
    Customer,
    Provider,
    Shared,
}

/// Settings of every control family.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Controls {
    /// Identity and access: IAM-01..IAM-08.
    #[serde(default)]
    pub rbac: RbacControls,
    /// Workload security (Pod Security Standards): WKL-01..WKL-10, AUD-01.
    #[serde(default)]
    pub pod_security: PodSecurityControls,
    /// Network hardening: NET-01..NET-05.
    #[serde(default)]
    pub network: NetworkControls,
    /// Default ServiceAccount token: IAM-09.
    #[serde(default)]
    pub service_accounts: ServiceAccountControls,
    /// Data handling: DAT-01, DAT-02.
    #[serde(default)]
    pub data: FamilyToggle,
    /// Audit visibility: AUD-02.
    #[serde(default)]
    pub audit: FamilyToggle,
}

fn enabled() -> bool {
    true
}

/// Switches a family on or off and optionally overrides the policy's mode for it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FamilyToggle {
    /// Disabling a customer-owned family raises ResponsibilityGap.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Mode for this family; defaults to the policy's mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

impl Default for FamilyToggle {
    fn default() -> Self {
        FamilyToggle {
            enabled: true,
            mode: None,
        }
    }
}

/// RBAC settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RbacControls {
    /// Disabling a customer-owned family raises ResponsibilityGap.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Mode for this family; defaults to the policy's mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Subjects allowed to hold cluster-admin (and other powerful grants).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_admin_subjects: Vec<SubjectRef>,
}

impl Default for RbacControls {
    fn default() -> Self {
        RbacControls {
            enabled: true,
            mode: None,
            cluster_admin_subjects: Vec::new(),
        }
    }
}

/// An RBAC subject.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Hash, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.kind == 'ServiceAccount' ? has(self.__namespace__) : !has(self.__namespace__)"
).message("namespace is required for kind ServiceAccount and not allowed otherwise"))]
pub struct SubjectRef {
    pub kind: SubjectKind,
    /// Name of the User, Group or ServiceAccount.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Namespace of the ServiceAccount; only for kind ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Kind of an RBAC subject.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum SubjectKind {
    User,
    Group,
    ServiceAccount,
}

/// Pod Security level.
#[derive(
    Deserialize,
    Serialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurityLevel {
    Baseline,
    #[default]
    Restricted,
}

/// Pod Security settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityControls {
    /// Disabling a customer-owned family raises ResponsibilityGap.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Mode for this family; defaults to the policy's mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Pod Security Standards level workloads must meet.
    #[serde(default)]
    pub level: PodSecurityLevel,
    /// Pod Security Standards version: `latest` or `v1.N`.
    #[serde(default = "latest")]
    #[schemars(regex(pattern = r"^(latest|v1\.(0|[1-9][0-9]*))$"))]
    pub version: String,
    /// Set the `enforce` label even while existing workloads would be rejected.
    #[serde(default)]
    pub force_enforce: bool,
}

fn latest() -> String {
    "latest".into()
}

impl Default for PodSecurityControls {
    fn default() -> Self {
        PodSecurityControls {
            enabled: true,
            mode: None,
            level: PodSecurityLevel::default(),
            version: latest(),
            force_enforce: false,
        }
    }
}

/// Direction of traffic a default-deny NetworkPolicy covers.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Direction {
    Ingress,
    Egress,
}

/// Network settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkControls {
    /// Disabling a customer-owned family raises ResponsibilityGap.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Mode for this family; defaults to the policy's mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Directions every namespace must deny by default: `Ingress` is checked as NET-01,
    /// `Egress` as NET-02, and in Enforce mode `onus-default-deny` covers exactly the listed
    /// directions (its policyTypes). A direction left out is neither checked nor denied;
    /// leaving out `Ingress` raises ResponsibilityGap, as NET-01 is the customer's.
    #[serde(default = "ingress_only")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub default_deny: Vec<Direction>,
    /// Allow DNS egress when egress is denied.
    #[serde(default = "enabled", rename = "allowDNS")]
    pub allow_dns: bool,
    /// Namespaces where Enforce mode may apply `onus-default-deny` although they back an
    /// admission webhook (Validating/MutatingWebhookConfiguration), a CRD conversion webhook or
    /// an aggregated APIService. Elsewhere onus holds the default-deny in such a namespace and
    /// says so in status: a deny in front of a Service the API server calls can break the
    /// cluster's API. List a namespace only once its backends' traffic is allowed by a
    /// NetworkPolicy of its own. Every Enforce policy that wants a default-deny there must list
    /// it. onus's own namespace never gets one, listed or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub allow_default_deny_in_front_of_webhooks: Vec<String>,
}

fn ingress_only() -> Vec<Direction> {
    vec![Direction::Ingress]
}

impl Default for NetworkControls {
    fn default() -> Self {
        NetworkControls {
            enabled: true,
            mode: None,
            default_deny: ingress_only(),
            allow_dns: true,
            allow_default_deny_in_front_of_webhooks: Vec::new(),
        }
    }
}

/// ServiceAccount settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountControls {
    /// Disabling a customer-owned family raises ResponsibilityGap.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Mode for this family; defaults to the policy's mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Whether the `default` ServiceAccount may mount its token.
    #[serde(default)]
    pub automount_default_token: bool,
}

impl Default for ServiceAccountControls {
    fn default() -> Self {
        ServiceAccountControls {
            enabled: true,
            mode: None,
            automount_default_token: false,
        }
    }
}

/// An explicit owner for one control, overriding the service model's default.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Responsibility {
    /// Control id, e.g. NET-04.
    #[schemars(schema_with = "control_id")]
    pub control: String,
    pub owner: Owner,
    /// Why the owner differs from the model default.
    #[schemars(length(min = 1))]
    pub reason: String,
}

/// A justified, optionally expiring exemption.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Exception {
    /// Control ids the exception covers.
    #[schemars(schema_with = "control_ids_list")]
    pub controls: Vec<String>,
    /// Namespaces it applies in; empty means every governed namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Objects it applies to; empty means every object in those namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceRef>,
    /// Why the exception is acceptable.
    #[schemars(length(min = 1))]
    pub reason: String,
    /// When the exception stops applying (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Time>,
}

/// A kind and name, e.g. DaemonSet node-exporter.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRef {
    /// Kind of the object, e.g. DaemonSet, Deployment, ServiceAccount.
    #[schemars(length(min = 1))]
    pub kind: String,
    /// Name of the object.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// What onus observed for a policy.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResponsibilityPolicyStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready (the spec is valid and was evaluated; False with reason InvalidSpec), Compliant
    /// (every customer-owned control passes), ResponsibilityGap (a control the customer owns is
    /// disabled or assigned away) and, in Enforce mode, Enforced (every safe remediation is in
    /// place).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Exact counts over the governed namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// The responsibility matrix: one entry per control of the catalog, in catalog order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controls: Vec<ControlStatus>,
    /// Enforce mode: remediations still to apply. Audit mode: what Enforce would change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<RemediationStatus>,
    /// The Pod Security Standards version workloads are judged at: the policy's version, with
    /// `latest` (or a pin newer than the API server) resolved to what this server's PodSecurity
    /// admission applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_version: Option<String>,
    /// The last valid spec in Enforce mode, and its generation: while the current spec is
    /// invalid, onus keeps enforcing this one (an invalid edit never releases a protection),
    /// also across restarts. Absent when the policy audits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforced_spec: Option<EnforcedSpec>,
}

/// A spec onus enforces, with the generation it came from.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnforcedSpec {
    /// The generation the spec came from.
    pub generation: i64,
    /// The spec as it was then.
    pub spec: ResponsibilityPolicySpec,
}

/// Safe remediations per kind, counted in namespaces.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemediationStatus {
    /// `Pending` in Enforce mode (still to apply), `WouldApply` in Audit mode or on an
    /// Audit-only install (dry run).
    pub kind: RemediationKind,
    /// Namespaces that need `onus-default-deny` created or corrected.
    #[schemars(with = "i32")]
    pub network_policies: u32,
    /// Namespaces that need Pod Security labels.
    #[schemars(with = "i32")]
    pub pod_security_labels: u32,
    /// Namespaces whose `default` ServiceAccount still mounts its token.
    #[schemars(with = "i32")]
    pub service_accounts: u32,
    /// Namespaces where the `enforce` label waits for existing workloads (capped sample).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enforce_waiting: Vec<String>,
    /// Namespaces where `onus-default-deny` waits because the namespace backs a webhook or
    /// APIService, is onus's own, or those backends are not known yet (capped sample).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_policy_waiting: Vec<String>,
}

/// Whether remediation counts are pending work or a dry run.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RemediationKind {
    #[default]
    Pending,
    WouldApply,
}

/// Exact counts over the governed namespaces.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Namespaces the policy governs.
    #[schemars(with = "i32")]
    pub namespaces: u32,
    /// Controls evaluated (the whole catalog).
    #[schemars(with = "i32")]
    pub controls: u32,
    /// Controls owned by the customer or shared.
    #[schemars(with = "i32")]
    pub customer_owned: u32,
    /// Controls whose result is Pass.
    #[schemars(with = "i32")]
    pub passing: u32,
    /// Controls whose result is Fail.
    #[schemars(with = "i32")]
    pub failing: u32,
    /// Violations of the failing controls (exceptions not counted).
    #[schemars(with = "i64")]
    pub violations: u64,
    /// Violations covered by exceptions, over every control.
    #[schemars(with = "i64")]
    pub excepted: u64,
}

/// Where a control's owner came from.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OwnerSource {
    ServiceModel,
    Override,
}

/// Outcome of one control.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ControlResult {
    Pass,
    Fail,
    Excepted,
    ProviderOwned,
    NotObservable,
    Disabled,
}

/// The result of one control for one policy.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlStatus {
    /// Control id, e.g. NET-01 (docs/controls.md lists them).
    pub id: String,
    /// What the control requires.
    pub title: String,
    /// The block of spec.controls that configures it, e.g. network.
    pub family: String,
    pub owner: Owner,
    pub owner_source: OwnerSource,
    pub result: ControlResult,
    /// Objects that violate the control (exact count; exceptions not counted).
    #[schemars(with = "i64")]
    pub violations: u64,
    /// Violations covered by exceptions.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(with = "i64")]
    pub excepted: u64,
    /// A capped sample of offending objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
    /// Framework items the control maps to (CIS, PSS, NSA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frameworks: Vec<String>,
    /// `Deny`: prevented at admission by a ValidatingAdmissionPolicy onus generated and the
    /// API server accepted; `Warn`: warned there. Absent: only detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<AdmissionAction>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;
    use serde_json::Value;

    use super::ResponsibilityPolicy;

    /// Walks a schema and collects the path of every property without a description.
    fn undescribed(schema: &Value, path: &str, out: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                let here = format!("{path}.{name}");
                let described = prop
                    .get("description")
                    .and_then(Value::as_str)
                    .is_some_and(|d| !d.trim().is_empty());
                if !described {
                    out.push(here.clone());
                }
                undescribed(prop, &here, out);
            }
        }
        if let Some(items) = schema.get("items") {
            undescribed(items, &format!("{path}[]"), out);
        }
        if let Some(extra) = schema.get("additionalProperties") {
            undescribed(extra, &format!("{path}{{}}"), out);
        }
    }

    #[test]
    fn every_field_has_a_description_for_kubectl_explain() {
        let crd = serde_json::to_value(ResponsibilityPolicy::crd()).expect("json");
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert!(schema.is_object(), "no schema in the CRD");
        let mut missing = Vec::new();
        for part in ["spec", "status"] {
            let Some(prop) = schema["properties"].get(part) else {
                panic!("the schema has no {part}");
            };
            assert!(
                prop.get("description").is_some(),
                "{part} has no description"
            );
            undescribed(prop, part, &mut missing);
        }
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:#?}"
        );
    }
}
