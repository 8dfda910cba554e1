//! Builders that make test pods read like sentences.

use super::super::{ObjectMeta, PodSpec, Version};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EphemeralContainer, PodSecurityContext, SecurityContext, Sysctl,
    Volume,
};
use serde_json::json;

/// A pod under construction; starts with one container named "app".
#[derive(Clone)]
pub(super) struct TestPod {
    pub(super) meta: ObjectMeta,
    pub(super) spec: PodSpec,
}

/// A pod with one container and no security settings: passes baseline only.
pub(super) fn bare_pod() -> TestPod {
    TestPod {
        meta: ObjectMeta::default(),
        spec: PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("app".into()),
                ..Default::default()
            }],
            ..Default::default()
        },
    }
}

/// A pod that passes restricted at every version: the starting point tests then break.
pub(super) fn restricted_pod() -> TestPod {
    bare_pod()
        .pod_security(|s| {
            s.run_as_non_root = Some(true);
            s.seccomp_profile = Some(from(json!({"type": "RuntimeDefault"})));
        })
        .app(hardened)
}

pub(super) fn hardened(s: &mut SecurityContext) {
    s.allow_privilege_escalation = Some(false);
    s.capabilities = Some(Capabilities {
        drop: Some(vec!["ALL".into()]),
        add: None,
    });
}

pub(super) fn from<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("test literal")
}

impl TestPod {
    pub(super) fn pod_security(mut self, f: impl FnOnce(&mut PodSecurityContext)) -> Self {
        f(self
            .spec
            .security_context
            .get_or_insert_with(Default::default));
        self
    }

    /// Changes the security context of the "app" container.
    pub(super) fn app(mut self, f: impl FnOnce(&mut SecurityContext)) -> Self {
        if let Some(c) = self.spec.containers.first_mut() {
            f(c.security_context.get_or_insert_with(Default::default));
        }
        self
    }

    pub(super) fn spec(mut self, f: impl FnOnce(&mut PodSpec)) -> Self {
        f(&mut self.spec);
        self
    }

    pub(super) fn init_container(
        mut self,
        name: &str,
        f: impl FnOnce(&mut SecurityContext),
    ) -> Self {
        let mut sc = SecurityContext::default();
        f(&mut sc);
        let init = self.spec.init_containers.get_or_insert_with(Vec::new);
        init.push(Container {
            name: name.into(),
            security_context: Some(sc),
            ..Default::default()
        });
        self
    }

    pub(super) fn ephemeral_container(
        mut self,
        name: &str,
        f: impl FnOnce(&mut SecurityContext),
    ) -> Self {
        let mut sc = SecurityContext::default();
        f(&mut sc);
        let eph = self.spec.ephemeral_containers.get_or_insert_with(Vec::new);
        eph.push(EphemeralContainer {
            name: name.into(),
            security_context: Some(sc),
            ..Default::default()
        });
        self
    }

    pub(super) fn annotated(mut self, key: &str, value: &str) -> Self {
        let annotations = self.meta.annotations.get_or_insert_with(Default::default);
        annotations.insert(key.into(), value.into());
        self
    }

    pub(super) fn volume(self, volume: serde_json::Value) -> Self {
        self.spec(|s| {
            s.volumes
                .get_or_insert_with(Vec::new)
                .push(from::<Volume>(volume))
        })
    }

    pub(super) fn sysctl(self, name: &str) -> Self {
        self.pod_security(|s| {
            s.sysctls.get_or_insert_with(Vec::new).push(Sysctl {
                name: name.into(),
                value: "1".into(),
            })
        })
    }

    pub(super) fn windows(self) -> Self {
        self.spec(|s| s.os = Some(from(json!({"name": "windows"}))))
    }

    pub(super) fn user_namespaced(self) -> Self {
        self.spec(|s| s.host_users = Some(false))
    }
}

pub(super) fn add_caps(caps: &[&str]) -> impl FnOnce(&mut SecurityContext) {
    let caps: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
    move |s| s.capabilities.get_or_insert_with(Default::default).add = Some(caps)
}

pub(super) fn v(minor: u32) -> Version {
    Version::Minor(minor)
}

pub(super) const LATEST: Version = Version::Latest;
