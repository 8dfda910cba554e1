//! Objects the API server calls back into a namespace for: admission webhooks (Validating and
//! Mutating), CRD conversion webhooks and aggregated APIServices. A default-deny ingress
//! NetworkPolicy in front of their Service can break the whole cluster's API, so onus holds its
//! `onus-default-deny` in the namespaces these point at (see [`crate::remediate`]).
//!
//! Each object is decoded into a slim shape that reads only the Services it points at: a CRD
//! can be hundreds of kilobytes of schema, of which this keeps two strings (or nothing).

use serde::Deserialize;
use std::net::IpAddr;

/// The kinds whose objects point at a Service the API server calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendKind {
    ValidatingWebhookConfiguration,
    MutatingWebhookConfiguration,
    CustomResourceDefinition,
    APIService,
}

impl BackendKind {
    pub const ALL: [BackendKind; 4] = [
        BackendKind::ValidatingWebhookConfiguration,
        BackendKind::MutatingWebhookConfiguration,
        BackendKind::CustomResourceDefinition,
        BackendKind::APIService,
    ];

    /// How status names an object of this kind, e.g. `webhook cert-manager-webhook`.
    pub fn describe(self, name: &str) -> String {
        match self {
            BackendKind::ValidatingWebhookConfiguration
            | BackendKind::MutatingWebhookConfiguration => format!("webhook {name}"),
            BackendKind::CustomResourceDefinition => format!("conversion webhook of CRD {name}"),
            BackendKind::APIService => format!("APIService {name}"),
        }
    }
}

/// The Services (namespace, name) one object points at, and the IP addresses it calls by URL,
/// each sorted, without duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendFact {
    pub services: Vec<(String, String)>,
    /// `https://10.96.0.12/…`: the Service with that cluster IP, wherever it is, is called.
    pub ips: Vec<IpAddr>,
}

/// What a client configuration calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Service(ServiceRef),
    Ip(IpAddr),
}

/// Name, namespace and resourceVersion: all a backend object's metadata is read for (no
/// annotations: a CRD's last-applied-configuration can be as large as its schema).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimMeta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub resource_version: Option<String>,
}

/// `clientConfig.service` / `spec.service`: a Service reference.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ServiceRef {
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ClientConfig {
    #[serde(default)]
    pub service: Option<ServiceRef>,
    /// A URL instead of a Service: one naming a Service by its cluster DNS name
    /// (`<name>.<namespace>.svc[.<cluster domain>]`) reaches that Service all the same.
    #[serde(default)]
    pub url: Option<String>,
}

impl ClientConfig {
    /// What this calls: `service`, or what its URL's host names.
    fn target(&self) -> Option<Target> {
        match &self.service {
            Some(service) => Some(Target::Service(service.clone())),
            None => self.url.as_deref().and_then(target_of_url),
        }
    }
}

/// What a URL's host names: a Service by its cluster DNS name, e.g. `hook.gatekeeper.svc` or
/// `hook.gatekeeper.svc.cluster.local` (any cluster domain), or an IP address (`10.96.0.12`,
/// `[fd00::12]`), which may be a Service's cluster IP. Other hosts (outside names) name none.
fn target_of_url(url: &str) -> Option<Target> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match host.strip_prefix('[') {
        // An IPv6 literal: `[addr]` or `[addr]:port`.
        Some(v6) => v6.split(']').next()?,
        None => host.split(':').next()?,
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(Target::Ip(ip));
    }
    let host = host.to_ascii_lowercase();
    let labels: Vec<&str> = host.trim_end_matches('.').split('.').collect();
    match labels.as_slice() {
        [name, namespace, "svc", ..] if !name.is_empty() && !namespace.is_empty() => {
            Some(Target::Service(ServiceRef {
                namespace: Some((*namespace).to_string()),
                name: Some((*name).to_string()),
            }))
        }
        _ => None,
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    #[serde(default)]
    pub client_config: Option<ClientConfig>,
}

/// A ValidatingWebhookConfiguration or MutatingWebhookConfiguration.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct WebhookConfigurationObject {
    #[serde(default)]
    pub metadata: SlimMeta,
    #[serde(default)]
    pub webhooks: Option<Vec<Webhook>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversionWebhook {
    #[serde(default)]
    pub client_config: Option<ClientConfig>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Conversion {
    #[serde(default)]
    pub webhook: Option<ConversionWebhook>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct CrdSpec {
    #[serde(default)]
    pub conversion: Option<Conversion>,
}

/// A CustomResourceDefinition: only its conversion webhook's Service.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CrdObject {
    #[serde(default)]
    pub metadata: SlimMeta,
    #[serde(default)]
    pub spec: Option<CrdSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ApiServiceSpec {
    #[serde(default)]
    pub service: Option<ServiceRef>,
}

/// An APIService: only its Service (absent for the API server's own groups).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ApiServiceObject {
    #[serde(default)]
    pub metadata: SlimMeta,
    #[serde(default)]
    pub spec: Option<ApiServiceSpec>,
}

fn fact(targets: impl IntoIterator<Item = Target>) -> Option<BackendFact> {
    let mut services: Vec<(String, String)> = Vec::new();
    let mut ips: Vec<IpAddr> = Vec::new();
    for target in targets {
        match target {
            Target::Service(s) => {
                if let Some(ns) = s.namespace.filter(|ns| !ns.is_empty()) {
                    services.push((ns, s.name.unwrap_or_default()));
                }
            }
            Target::Ip(ip) => ips.push(ip),
        }
    }
    services.sort();
    services.dedup();
    ips.sort();
    ips.dedup();
    (!services.is_empty() || !ips.is_empty()).then_some(BackendFact { services, ips })
}

/// The Services of a webhook configuration's webhooks (a webhook called by a URL outside the
/// cluster's Service names has none).
pub fn webhook_configuration(obj: &WebhookConfigurationObject) -> Option<BackendFact> {
    fact(
        obj.webhooks
            .iter()
            .flatten()
            .filter_map(|w| w.client_config.as_ref()?.target()),
    )
}

/// The Service of a CRD's conversion webhook.
pub fn crd_conversion(obj: &CrdObject) -> Option<BackendFact> {
    fact(
        obj.spec
            .as_ref()
            .and_then(|s| {
                s.conversion
                    .as_ref()?
                    .webhook
                    .as_ref()?
                    .client_config
                    .as_ref()
            })
            .and_then(ClientConfig::target),
    )
}

/// The Service of an aggregated APIService.
pub fn api_service(obj: &ApiServiceObject) -> Option<BackendFact> {
    fact(
        obj.spec
            .as_ref()
            .and_then(|s| s.service.clone())
            .map(Target::Service),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_webhook_service_is_read_and_outside_urls_are_not() {
        let obj: WebhookConfigurationObject = serde_json::from_value(json!({
            "metadata": {"name": "cert-manager-webhook", "annotations": {"a": "b"}},
            "webhooks": [
                {"name": "a", "clientConfig": {"service": {"namespace": "cert-manager", "name": "cm", "port": 443}, "caBundle": "AAAA"}},
                {"name": "b", "clientConfig": {"url": "https://example.com"}},
                {"name": "c", "clientConfig": {"service": {"namespace": "cert-manager", "name": "cm"}}},
                {"name": "d", "clientConfig": {"service": {"namespace": "other", "name": "x"}}}
            ]
        }))
        .expect("decodes");
        assert_eq!(
            webhook_configuration(&obj).expect("fact").services,
            [
                ("cert-manager".to_string(), "cm".to_string()),
                ("other".to_string(), "x".to_string())
            ]
        );
    }

    #[test]
    fn a_webhook_called_by_the_dns_name_of_a_service_backs_its_namespace() {
        // A URL naming a Service by its cluster DNS name reaches the same Service as
        // `clientConfig.service`: a default-deny in front of it cuts the webhook off alike.
        let obj: WebhookConfigurationObject = serde_json::from_value(json!({
            "metadata": {"name": "policy-webhook"},
            "webhooks": [
                {"name": "a", "clientConfig": {"url": "https://hook.gatekeeper.svc:8443/validate"}},
                {"name": "b", "clientConfig": {"url": "https://Hook.Kyverno.SVC.cluster.local./x"}},
                {"name": "c", "clientConfig": {"url": "https://webhook.example.com/validate"}},
                {"name": "d", "clientConfig": {"url": "https://10.96.0.12:443/validate"}}
            ]
        }))
        .expect("decodes");
        assert_eq!(
            webhook_configuration(&obj).expect("fact").services,
            [
                ("gatekeeper".to_string(), "hook".to_string()),
                ("kyverno".to_string(), "hook".to_string())
            ]
        );
        let crd: CrdObject = serde_json::from_value(json!({
            "metadata": {"name": "things.example.com"},
            "spec": {"conversion": {"strategy": "Webhook", "webhook": {
                "clientConfig": {"url": "https://convert.things.svc.cluster.local/convert"}}}}
        }))
        .expect("decodes");
        assert_eq!(
            crd_conversion(&crd).expect("fact").services,
            [("things".to_string(), "convert".to_string())]
        );
    }

    #[test]
    fn a_webhook_called_by_an_ip_address_records_it_for_the_service_that_has_it() {
        let obj: WebhookConfigurationObject = serde_json::from_value(json!({
            "metadata": {"name": "by-ip"},
            "webhooks": [
                {"name": "a", "clientConfig": {"url": "https://10.96.0.12:443/validate"}},
                {"name": "b", "clientConfig": {"url": "https://[fd00::12]:8443/x"}},
                {"name": "c", "clientConfig": {"url": "https://[fd00::13]/x"}},
                {"name": "d", "clientConfig": {"url": "https://user@10.96.0.14/x"}},
                {"name": "e", "clientConfig": {"url": "https://10.96.0.12/again"}}
            ]
        }))
        .expect("decodes");
        let fact = webhook_configuration(&obj).expect("fact");
        assert!(fact.services.is_empty());
        let ips: Vec<String> = fact.ips.iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["10.96.0.12", "10.96.0.14", "fd00::12", "fd00::13"]);
    }

    #[test]
    fn a_crd_without_a_conversion_webhook_and_a_local_api_service_project_to_nothing() {
        let crd: CrdObject = serde_json::from_value(json!({
            "metadata": {"name": "things.example.com"},
            "spec": {"group": "example.com", "conversion": {"strategy": "None"},
                     "versions": [{"name": "v1", "schema": {"openAPIV3Schema": {"type": "object"}}}]}
        }))
        .expect("decodes");
        assert_eq!(crd_conversion(&crd), None);
        let local: ApiServiceObject = serde_json::from_value(json!({
            "metadata": {"name": "v1.apps"}, "spec": {"group": "apps", "version": "v1"}
        }))
        .expect("decodes");
        assert_eq!(api_service(&local), None);
    }

    #[test]
    fn a_conversion_webhook_and_an_aggregated_api_service_name_their_service() {
        let crd: CrdObject = serde_json::from_value(json!({
            "metadata": {"name": "certificates.cert-manager.io"},
            "spec": {"conversion": {"strategy": "Webhook", "webhook": {
                "clientConfig": {"service": {"namespace": "cert-manager", "name": "cm-webhook", "path": "/convert"}},
                "conversionReviewVersions": ["v1"]}}}
        }))
        .expect("decodes");
        assert_eq!(
            crd_conversion(&crd).expect("fact").services,
            [("cert-manager".to_string(), "cm-webhook".to_string())]
        );
        let metrics: ApiServiceObject = serde_json::from_value(json!({
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {"service": {"namespace": "kube-system", "name": "metrics-server"}, "group": "metrics.k8s.io"}
        }))
        .expect("decodes");
        assert_eq!(
            api_service(&metrics).expect("fact").services,
            [("kube-system".to_string(), "metrics-server".to_string())]
        );
        assert_eq!(
            BackendKind::APIService.describe("v1beta1.metrics.k8s.io"),
            "APIService v1beta1.metrics.k8s.io"
        );
    }
}
