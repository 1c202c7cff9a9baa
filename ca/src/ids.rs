//! Names of the CA's things: certificate serials and tenants, defined once in
//! `portcullis-identity` (the gateway and the admin API use the same types and rules).

pub use portcullis_identity::{Serial, TenantId};
