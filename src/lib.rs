//! onus: a Kubernetes operator that turns the customer side of the cloud Shared Responsibility
//! Model into a checked, enforced agreement.
//!
//! The crate is a fat library with thin binaries: pure modules decide (catalog, facts,
//! evaluation, status), the controller module talks to the API server.

pub mod crd;
pub mod podsecurity;
pub mod rbac;
