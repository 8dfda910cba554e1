//! onus: a Kubernetes operator that turns the customer side of the cloud Shared Responsibility
//! Model into a checked, enforced agreement.
//!
//! A fat library with thin binaries. Pure modules decide: [`catalog`] (the controls),
//! [`facts`] (projection of objects), [`index`] (facts by object), [`podsecurity`] and [`rbac`]
//! (checks), [`evaluate`] (per-policy aggregation), [`status`] (status and conditions),
//! [`remediate`] (Enforce-mode plans), [`validate`]. Only [`controller`] and [`enforce`] talk to
//! the API server; [`check`] runs the same evaluation offline on manifests, and [`report`]
//! writes it up for auditors (from a cluster: its status and a read-only live list).

pub mod admission;
pub mod args;
pub mod catalog;
pub mod check;
pub mod controller;
pub mod crd;
pub mod enforce;
pub mod evaluate;
pub mod facts;
pub mod http;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod podsecurity;
pub mod rbac;
pub mod remediate;
pub mod report;
pub mod status;
pub mod validate;

/// The field manager of every write onus makes.
pub const FIELD_MANAGER: &str = "onus";
