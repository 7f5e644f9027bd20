//! Token family and client state in Redis.
//!
//! # Layout
//! - [`keys`]: the key layout; every key of a family shares the hash tag `{family id}`.
//! - [`family_record`]: the compact one-string form of a family, as the scripts write it.
//! - [`scripts`]: the Lua scripts (one file per operation under `lua/`), loaded once.
//! - [`connector`]: how Redis is reached (one node, Sentinel, Cluster), by the URL's form.
//! - [`redis_store`]: [`RedisStore`], the [`token_core::Store`] over a deadpool pool,
//!   with a timeout on every call, a client span per call, and errors sorted into
//!   "unavailable" and "corrupt".
//! - [`monitor`]: Redis's eviction policy, memory high-water mark and clock offset, as the
//!   health watcher last read them.
//! - [`audit`]: [`AuditLog`], the per-client refresh audit in Redis Streams: a queue and a
//!   writer task that appends in batches, and the list and summary queries.

#![forbid(unsafe_code)]

pub mod audit;
pub mod connector;
pub mod family_record;
pub mod keys;
mod metrics;
pub mod monitor;
mod redis_store;
pub mod scripts;

pub use audit::{AuditConfig, AuditLog};
pub use connector::Topology;
pub use monitor::{MemoryReport, StoreMonitor};
pub use redis_store::{DEFAULT_HIGH_WATER_PERMILLE, RedisStore, ReplicaWait, StoreConfig};
