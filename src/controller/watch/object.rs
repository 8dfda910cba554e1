//! The object type the watches list and watch: each object is decoded straight into the shape
//! its projection reads (a typed object for the small kinds, a [`crate::facts::wire`] shape for
//! the kinds that run pods), never into a `serde_json::Value` first.
//!
//! One object that does not decode must not fail its whole list page (that would stall the
//! watch, and with it every evaluation): the object's JSON is taken as raw text first and
//! decoded from there, so a bad object becomes [`Decoded::Bad`] with its name and the reason,
//! which the watch logs and skips.

use std::borrow::Cow;

use kube::{
    Resource,
    api::ApiResource,
    core::{DynamicResourceScope, ObjectMeta},
};
use serde::{Deserialize, Deserializer, de::DeserializeOwned};
use serde_json::value::RawValue;

/// A watched object: its identity, and its body decoded as `P` (or why it could not be).
#[derive(Clone, Debug)]
pub struct Watched<P> {
    /// Name, namespace and resourceVersion only (the watcher resumes from resourceVersion).
    meta: ObjectMeta,
    pub body: Decoded<P>,
}

#[derive(Clone, Debug)]
pub enum Decoded<P> {
    Ok(P),
    /// Not decodable as `P`: the error, for the log.
    Bad(String),
}

/// What every object has, whatever else fails to decode.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Identity {
    #[serde(default)]
    metadata: IdentityMeta,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentityMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
}

/// A decoded body that knows its own name, namespace and resourceVersion.
pub trait Identified {
    fn identity(&self) -> (Option<&str>, Option<&str>, Option<&str>);
}

macro_rules! identified_by_metadata {
    ($($ty:ty),* $(,)?) => {$(
        impl Identified for $ty {
            fn identity(&self) -> (Option<&str>, Option<&str>, Option<&str>) {
                let m = &self.metadata;
                (m.name.as_deref(), m.namespace.as_deref(), m.resource_version.as_deref())
            }
        }
    )*};
}
identified_by_metadata!(
    k8s_openapi::api::core::v1::Namespace,
    k8s_openapi::api::core::v1::ServiceAccount,
    k8s_openapi::api::core::v1::Service,
    k8s_openapi::api::networking::v1::NetworkPolicy,
    k8s_openapi::api::rbac::v1::Role,
    k8s_openapi::api::rbac::v1::ClusterRole,
    k8s_openapi::api::rbac::v1::RoleBinding,
    k8s_openapi::api::rbac::v1::ClusterRoleBinding,
    crate::facts::wire::PodObject,
    crate::facts::wire::WorkloadObject,
    crate::facts::backends::WebhookConfigurationObject,
    crate::facts::backends::CrdObject,
    crate::facts::backends::ApiServiceObject,
);

impl<P> Watched<P> {
    pub fn meta(&self) -> &ObjectMeta {
        &self.meta
    }
}

fn owned(s: Option<&str>) -> Option<String> {
    s.map(String::from)
}

impl<P: DeserializeOwned + Identified> Watched<P> {
    /// Decodes one object's JSON text.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let (meta, body) = match serde_json::from_str::<P>(text) {
            Ok(body) => {
                let (name, namespace, resource_version) = body.identity();
                let meta = ObjectMeta {
                    name: owned(name),
                    namespace: owned(namespace),
                    resource_version: owned(resource_version),
                    ..ObjectMeta::default()
                };
                (meta, Decoded::Ok(body))
            }
            Err(error) => {
                // Only JSON that is not an object fails as a whole (the API server never sends
                // such); of anything else at least the identity is known.
                let IdentityMeta {
                    name,
                    namespace,
                    resource_version,
                } = serde_json::from_str::<Identity>(text)?.metadata;
                let meta = ObjectMeta {
                    name,
                    namespace,
                    resource_version,
                    ..ObjectMeta::default()
                };
                (meta, Decoded::Bad(error.to_string()))
            }
        };
        Ok(Watched { meta, body })
    }
}

impl<'de, P: DeserializeOwned + Identified> Deserialize<'de> for Watched<P> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Watched::from_json(raw.get()).map_err(serde::de::Error::custom)
    }
}

impl<P> Resource for Watched<P> {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }
    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }
    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }
    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }
    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::wire::PodObject;
    use kube::core::ObjectList;

    #[test]
    fn a_bad_object_is_reported_and_its_page_still_decodes() {
        let page = r#"{"apiVersion": "v1", "kind": "PodList",
            "metadata": {"resourceVersion": "7"},
            "items": [
                {"metadata": {"name": "good", "namespace": "a", "resourceVersion": "5"},
                 "spec": {"containers": [{"name": "app", "securityContext": {"privileged": true}}]}},
                {"metadata": {"name": "bad", "namespace": "a", "resourceVersion": "6"},
                 "spec": {"containers": "not a list"}}
            ]}"#;
        let list: ObjectList<Watched<PodObject>> = serde_json::from_str(page).expect("page");
        assert_eq!(list.items.len(), 2);
        let Decoded::Ok(good) = &list.items[0].body else {
            panic!("the good object decodes")
        };
        let privileged = good.spec.as_ref().expect("spec").containers[0]
            .security_context
            .as_ref()
            .and_then(|s| s.privileged);
        assert_eq!(privileged, Some(true));
        assert!(matches!(&list.items[1].body, Decoded::Bad(e) if e.contains("invalid type")));
        assert_eq!(list.items[1].meta().name.as_deref(), Some("bad"));
        assert_eq!(list.items[1].meta().resource_version.as_deref(), Some("6"));
    }

    #[test]
    fn typed_objects_decode_the_same_way() {
        let ns: Watched<k8s_openapi::api::core::v1::Namespace> = serde_json::from_str(
            r#"{"metadata": {"name": "shop", "labels": {"env": "prod"}, "resourceVersion": "1"}}"#,
        )
        .expect("namespace");
        let Decoded::Ok(ns) = ns.body else {
            panic!("decodes")
        };
        assert_eq!(
            ns.metadata
                .labels
                .unwrap_or_default()
                .get("env")
                .map(String::as_str),
            Some("prod")
        );
    }
}
