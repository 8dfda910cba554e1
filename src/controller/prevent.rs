//! Prevention at admission, carried out: applies the ValidatingAdmissionPolicies and bindings
//! [`crate::admission::generate`] asks for (server-side apply under onus's field manager) and
//! removes those no policy asks for any more.
//!
//! onus only ever touches objects with a name it generates ([`admission::all_names`]) AND its
//! label `app.kubernetes.io/managed-by: onus`: a look-alike under another name is never seen,
//! and an object with one of onus's names but without the label is neither taken over nor
//! removed (the refusal is reported like any other).
//!
//! Applied when what is wanted changes, when a refusal is due for its retry, and every
//! [`REPAIR`] (an edit of a generated object by someone else is put back then).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    authentication::v1::SelfSubjectReview,
};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::{
    FIELD_MANAGER,
    admission::{self, Generated},
    facts::MANAGED_BY,
};

/// How often the generated objects are applied again though nothing changed.
const REPAIR: Duration = Duration::from_secs(300);
/// The first retry of a refused write; doubled per failed pass up to [`REPAIR`].
const RETRY: Duration = Duration::from_secs(5);

/// What was last carried out.
#[derive(Default)]
pub(super) struct Prevention {
    /// What was wanted at the last pass, and when it ran.
    done: Option<(BTreeMap<String, Generated>, Instant)>,
    /// Names whose policy and binding the API server holds as generated.
    pub in_place: BTreeSet<String>,
    /// Refused writes by name: the message.
    pub failures: BTreeMap<String, String>,
    /// Passes in a row that left a refusal.
    failed_passes: u32,
}

impl Prevention {
    /// When a refused write is due again.
    pub fn next_retry(&self) -> Option<Instant> {
        match &self.done {
            Some((_, at)) if !self.failures.is_empty() => Some(*at + self.backoff()),
            _ => None,
        }
    }

    fn backoff(&self) -> Duration {
        RETRY
            .saturating_mul(2u32.saturating_pow(self.failed_passes.saturating_sub(1)))
            .min(REPAIR)
    }

    /// Brings the generated objects to `wanted`; records what is in place and what was refused.
    pub async fn converge(&mut self, client: &Client, wanted: BTreeMap<String, Generated>) {
        let now = Instant::now();
        let fresh = self.done.as_ref().is_some_and(|(done, at)| {
            done == &wanted
                && now < *at + REPAIR
                && (self.failures.is_empty() || now < *at + self.backoff())
        });
        if fresh {
            return;
        }
        for name in admission::all_names() {
            let result = match wanted.get(&name) {
                Some(g) => apply(client, &name, g).await,
                None => remove(client, &name).await,
            };
            match result {
                Ok(Some(what)) => {
                    info!(name, "Admission: {what}");
                    self.failures.remove(&name);
                }
                Ok(None) => {
                    self.failures.remove(&name);
                }
                Err(message) => {
                    warn!(name, error = %message, "Admission policy write refused");
                    self.failures.insert(name.clone(), message);
                }
            }
            if wanted.contains_key(&name) && !self.failures.contains_key(&name) {
                self.in_place.insert(name);
            } else if !wanted.contains_key(&name) {
                self.in_place.remove(&name);
            } else {
                // Refused: only what the API server holds counts, and that is unknown.
                self.in_place.remove(&name);
            }
        }
        self.failed_passes = if self.failures.is_empty() {
            0
        } else {
            self.failed_passes.saturating_add(1)
        };
        self.done = Some((wanted, now));
    }
}

fn ours(meta: &kube::api::ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY.0))
        .is_some_and(|v| v == MANAGED_BY.1)
}

fn message(kind: &str, name: &str, error: &kube::Error) -> String {
    let why = match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    };
    format!("{kind} {name}: {why}")
}

/// The object of that name, refusing one onus did not create (never taken over).
async fn existing<K>(api: &Api<K>, kind: &str, name: &str) -> Result<Option<K>, String>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(Some(obj)) if !ours(obj.meta()) => Err(format!(
            "{kind} {name}: exists without the label {}={}; onus does not take it over \
             (rename or remove it to let onus check this control at admission)",
            MANAGED_BY.0, MANAGED_BY.1
        )),
        Ok(obj) => Ok(obj),
        Err(e) => Err(message(kind, name, &e)),
    }
}

async fn apply(client: &Client, name: &str, g: &Generated) -> Result<Option<String>, String> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let policies = Api::<ValidatingAdmissionPolicy>::all(client.clone());
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone());
    let before = existing(&policies, "ValidatingAdmissionPolicy", name).await?;
    let binding_before = existing(&bindings, "ValidatingAdmissionPolicyBinding", name).await?;
    let after = policies
        .patch(name, &params, &Patch::Apply(&g.policy))
        .await
        .map_err(|e| message("ValidatingAdmissionPolicy", name, &e))?;
    let binding_after = bindings
        .patch(name, &params, &Patch::Apply(&g.binding))
        .await
        .map_err(|e| message("ValidatingAdmissionPolicyBinding", name, &e))?;
    let changed = before.and_then(|b| b.metadata.resource_version)
        != after.metadata.resource_version
        || binding_before.and_then(|b| b.metadata.resource_version)
            != binding_after.metadata.resource_version;
    Ok(changed.then(|| {
        format!(
            "applied ValidatingAdmissionPolicy {name} ({:?}) for {}",
            g.action,
            g.policies.join(", ")
        )
    }))
}

async fn remove(client: &Client, name: &str) -> Result<Option<String>, String> {
    let mut removed = Vec::new();
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone());
    if let Some(b) = bindings
        .get_opt(name)
        .await
        .map_err(|e| message("ValidatingAdmissionPolicyBinding", name, &e))?
        .filter(|b| ours(&b.metadata))
    {
        delete(&bindings, name, b.metadata.uid)
            .await
            .map_err(|e| message("ValidatingAdmissionPolicyBinding", name, &e))?;
        removed.push("binding");
    }
    let policies = Api::<ValidatingAdmissionPolicy>::all(client.clone());
    if let Some(p) = policies
        .get_opt(name)
        .await
        .map_err(|e| message("ValidatingAdmissionPolicy", name, &e))?
        .filter(|p| ours(&p.metadata))
    {
        delete(&policies, name, p.metadata.uid)
            .await
            .map_err(|e| message("ValidatingAdmissionPolicy", name, &e))?;
        removed.push("policy");
    }
    Ok((!removed.is_empty()).then(|| {
        format!(
            "removed ValidatingAdmissionPolicy {name} ({})",
            removed.join(", ")
        )
    }))
}

/// Deletes exactly the object that was read (its uid): one recreated meanwhile by someone
/// else is left alone.
async fn delete<K>(api: &Api<K>, name: &str, uid: Option<String>) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// onus's own user name, as the API server authenticates it (exempt from what it generates).
pub(super) async fn own_user(client: &Client) -> Option<String> {
    let review: SelfSubjectReview = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
    }))
    .ok()?;
    match Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
    {
        Ok(r) => r.status?.user_info?.username,
        Err(error) => {
            warn!(%error, "Could not learn onus's own user name (SelfSubjectReview); it is not exempt from the admission policies onus generates");
            None
        }
    }
}
