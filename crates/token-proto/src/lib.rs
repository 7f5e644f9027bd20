//! Generated types and service stubs for the `tokens.v1` contract in `proto/tokens/v1`.
//!
//! # Layout
//! - [`v1`]: messages, `token_service_{client,server}` and `client_registry_{client,server}`.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors served by gRPC reflection.
//! - [`access`]: each method's `(tokens.v1.access)` option, read from those descriptors.

pub mod access;

/// The `tokens.v1` package.
pub mod v1 {
    tonic::include_proto!("tokens.v1");
}

/// Encoded `FileDescriptorSet` of the contract, for the reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tokens_v1_descriptor");
