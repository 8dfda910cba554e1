//! The namespaces the API server calls back into (admission webhooks, CRD conversion webhooks,
//! aggregated APIServices), kept by object and, derived from that, by namespace.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use super::{FactMap, Key, Undecodable};
use crate::facts::backends::{BackendFact, BackendKind};

/// Backend facts of the four kinds, and what each namespace backs.
#[derive(Debug, Default)]
pub struct Backends {
    maps: BTreeMap<BackendKind, FactMap<BackendFact>>,
    /// Per namespace, what it backs (`webhook cert-manager-webhook`, ...), sorted.
    by_namespace: BTreeMap<String, Vec<String>>,
    /// Per IP address called by URL, what calls it, sorted.
    by_ip: BTreeMap<IpAddr, Vec<String>>,
    /// Objects the watches saw but could not decode, per kind: where they call is unknown.
    unreadable: Undecodable<BackendKind>,
}

impl Backends {
    /// The facts of one kind.
    pub fn map(&mut self, kind: BackendKind) -> &mut FactMap<BackendFact> {
        self.maps.entry(kind).or_default()
    }

    /// Whether every one of the four watches has listed once: until then no namespace is known
    /// not to back anything.
    pub fn synced(&self) -> bool {
        BackendKind::ALL
            .iter()
            .all(|k| self.maps.get(k).is_some_and(FactMap::synced))
    }

    /// What `namespace` backs, e.g. `["webhook cert-manager-webhook"]`; empty when nothing
    /// (as far as the watches have seen).
    pub fn in_namespace(&self, namespace: &str) -> &[String] {
        self.by_namespace
            .get(namespace)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// What calls `ip` by URL (`webhook x`, ...); empty when nothing.
    pub fn calling(&self, ip: &IpAddr) -> &[String] {
        self.by_ip.get(ip).map(Vec::as_slice).unwrap_or_default()
    }

    /// Whether anything calls an IP address by URL.
    pub fn calls_ips(&self) -> bool {
        !self.by_ip.is_empty()
    }

    /// The IP addresses an object of `kind` calls by URL, as recorded now.
    pub fn ips_of(&self, kind: BackendKind, key: &Key) -> BTreeSet<IpAddr> {
        self.maps
            .get(&kind)
            .and_then(|m| m.get(key))
            .into_iter()
            .flat_map(|f| f.ips.iter().copied())
            .collect()
    }

    /// The namespaces an object of `kind` points into, as recorded now.
    pub fn namespaces_of(&self, kind: BackendKind, key: &Key) -> BTreeSet<String> {
        self.maps
            .get(&kind)
            .and_then(|m| m.get(key))
            .into_iter()
            .flat_map(|f| f.services.iter().map(|(ns, _)| ns.clone()))
            .collect()
    }

    /// Records whether an object of `kind` could be decoded (`readable`), from a watch event
    /// (`listing`: from a list in progress). Returns whether the set of unreadable objects
    /// changed.
    pub fn set_readable(
        &mut self,
        kind: BackendKind,
        key: &Key,
        readable: bool,
        listing: bool,
    ) -> bool {
        let error = (!readable).then_some("undecodable");
        self.unreadable.set(kind, key, error, listing)
    }

    /// A (re)list of `kind` starts.
    pub fn unreadable_list_start(&mut self, kind: BackendKind) {
        self.unreadable.list_start(kind);
    }

    /// The (re)list of `kind` is complete. Returns whether the set of unreadable objects
    /// changed.
    pub fn unreadable_list_done(&mut self, kind: BackendKind) -> bool {
        self.unreadable.list_done(kind)
    }

    /// The objects that could not be decoded, e.g. `webhook broken-hook`, sorted: while there
    /// is one, no namespace is known not to back something.
    pub fn unreadable(&self) -> Vec<String> {
        self.unreadable
            .iter()
            .map(|(kind, key, _)| kind.describe(&key.name))
            .collect()
    }

    /// Every namespace that backs something.
    pub fn namespaces(&self) -> impl Iterator<Item = &String> {
        self.by_namespace.keys()
    }

    /// Derives the per-namespace view again from the facts (after any change of them; they
    /// change rarely, and there are few).
    pub fn rebuild(&mut self) {
        let mut by_namespace: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut by_ip: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
        for (kind, map) in &self.maps {
            for (key, fact) in map.iter() {
                for (ns, _) in &fact.services {
                    by_namespace
                        .entry(ns.clone())
                        .or_default()
                        .insert(kind.describe(&key.name));
                }
                for ip in &fact.ips {
                    by_ip
                        .entry(*ip)
                        .or_default()
                        .insert(kind.describe(&key.name));
                }
            }
        }
        self.by_namespace = by_namespace
            .into_iter()
            .map(|(ns, set)| (ns, set.into_iter().collect()))
            .collect();
        self.by_ip = by_ip
            .into_iter()
            .map(|(ip, set)| (ip, set.into_iter().collect()))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(services: &[(&str, &str)]) -> Option<BackendFact> {
        Some(BackendFact {
            services: services
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            ips: Vec::new(),
        })
    }

    #[test]
    fn a_namespace_lists_everything_it_backs_and_only_after_all_four_lists_is_it_synced() {
        let mut b = Backends::default();
        b.map(BackendKind::ValidatingWebhookConfiguration).apply(
            Key::new(None, "cm"),
            fact(&[("cert-manager", "cm-webhook")]),
        );
        b.map(BackendKind::APIService).apply(
            Key::new(None, "v1beta1.metrics.k8s.io"),
            fact(&[("monitoring", "metrics")]),
        );
        b.map(BackendKind::CustomResourceDefinition).apply(
            Key::new(None, "certificates.cert-manager.io"),
            fact(&[("cert-manager", "cm-webhook")]),
        );
        b.rebuild();
        assert_eq!(
            b.in_namespace("cert-manager"),
            [
                "conversion webhook of CRD certificates.cert-manager.io",
                "webhook cm"
            ]
        );
        assert_eq!(
            b.in_namespace("monitoring"),
            ["APIService v1beta1.metrics.k8s.io"]
        );
        assert!(b.in_namespace("shop").is_empty());
        assert!(!b.synced());
        for kind in BackendKind::ALL {
            b.map(kind).reset_start();
            assert!(!b.synced());
            b.map(kind).reset_done();
        }
        assert!(b.synced());
        // The relists carried nothing: nothing is backed any more.
        b.rebuild();
        assert!(b.in_namespace("cert-manager").is_empty());
    }

    #[test]
    fn an_undecodable_object_stays_unreadable_until_decoded_deleted_or_relisted_without_it() {
        let kind = BackendKind::ValidatingWebhookConfiguration;
        let key = Key::new(None, "broken-hook");
        let mut b = Backends::default();
        assert!(b.set_readable(kind, &key, false, false));
        assert!(!b.set_readable(kind, &key, false, false), "already known");
        assert_eq!(b.unreadable(), ["webhook broken-hook"]);
        // A relist that still cannot read it keeps it; until the list is done it stays anyway.
        b.unreadable_list_start(kind);
        assert_eq!(b.unreadable(), ["webhook broken-hook"]);
        b.set_readable(kind, &key, false, true);
        assert!(!b.unreadable_list_done(kind));
        assert_eq!(b.unreadable(), ["webhook broken-hook"]);
        // A relist that can read it (or no longer sees it) lets go, when it is complete.
        b.unreadable_list_start(kind);
        b.set_readable(kind, &key, true, true);
        assert_eq!(b.unreadable(), ["webhook broken-hook"]);
        assert!(b.unreadable_list_done(kind));
        assert!(b.unreadable().is_empty());
        // A readable modification or a deletion lets go too.
        b.set_readable(kind, &key, false, false);
        assert!(b.set_readable(kind, &key, true, false));
        assert!(b.unreadable().is_empty());
    }
}
