//! Token family and client state in Redis.
//!
//! # Layout
//! - [`keys`]: the key layout; every key of a family shares the hash tag `{family id}`.
//! - [`family_record`]: the compact one-string form of a family in Rust; the format's one
//!   definition is `encode_family` / `decode_family` in `lua/prelude.lua`.
//! - [`script`]: one module per Lua script (`lua/<name>.lua`): the script, its typed
//!   KEYS/ARGV, its reply parser and its span name.
//! - [`connector`]: how Redis is reached (one node, Sentinel, Cluster), by the URL's form.
//! - `lanes`: the connections calls run on (shared multiplexed lanes, replaced when broken,
//!   timed out or READONLY; an own connection and WAIT for revocations), with a timeout on
//!   every call, a client span per call, and errors sorted into "unavailable", "full" and
//!   "corrupt".
//! - `redis_store`: [`RedisStore`], the [`token_core::Store`] composed of the scripts and
//!   the lanes.
//! - [`monitor`]: Redis's eviction policy, memory high-water mark and clock offset, as the
//!   health watcher last read them.
//! - [`audit`]: [`AuditLog`], the per-client refresh audit in Redis Streams: a queue and a
//!   writer task that appends in batches, and the list and summary queries.

#![forbid(unsafe_code)]

pub mod audit;
pub mod connector;
pub mod family_record;
pub mod keys;
mod lanes;
mod metrics;
pub mod monitor;
mod redis_store;
pub mod script;

pub use audit::{AuditConfig, AuditLog};
pub use connector::Topology;
pub use monitor::{MemoryReport, StoreMonitor};
pub use redis_store::{DEFAULT_HIGH_WATER_PERMILLE, RedisStore, ReplicaWait, StoreConfig};
