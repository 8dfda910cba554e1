//! RBAC effective-grant analysis (to be written).
