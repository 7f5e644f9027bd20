//! Token family and client state in Redis.
//!
//! # Layout
//! - [`keys`]: the key layout; every key of a family shares the hash tag `{family id}`.
//! - [`family_record`]: the compact one-string form of a family, as the scripts write it.
//! - [`scripts`]: the Lua scripts (one file per operation under `lua/`), loaded once.
//! - [`redis_store`]: [`RedisStore`], the [`token_core::Store`] over a deadpool-redis pool,
//!   with a timeout on every call and errors sorted into "unavailable" and "corrupt".

#![forbid(unsafe_code)]

pub mod family_record;
pub mod keys;
mod redis_store;
pub mod scripts;

pub use redis_store::{RedisStore, StoreConfig};
