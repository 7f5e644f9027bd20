//! The Lua scripts, one module per script, each owning what the script's header promises: the
//! [`Script`](deadpool_redis::redis::Script) (its `lua/<name>.lua`, compiled into the binary
//! with the prelude in front and sent by SHA, EVALSHA loading on NOSCRIPT), a call type that
//! builds KEYS and ARGV in the header's order, the reading of its reply, and its span name.
//! [`crate::RedisStore`] and [`crate::AuditLog`] only compose them (`ScriptCall`).
//!
//! Every script is prefixed with `lua/prelude.lua` ([`PRELUDE`]): the argument checks they
//! share and the family record format. They need Redis 7.0 or later (`TIME` before writes, the
//! `allow-oom` shebang).

use deadpool_redis::redis::{FromRedisValue, ScriptInvocation};
use token_core::StoreError;

use crate::lanes::Operation;

pub mod audit_append;
pub mod audit_list;
pub mod audit_summary;
pub mod create_client;
pub mod delete_client;
pub mod issue;
pub mod read_family;
pub mod revoke;
pub mod revoke_subject;
pub mod rotate;
pub mod set_client_secret;

/// The source of `lua/<file>` with the shared prelude in front, as one literal.
macro_rules! with_prelude {
    ($file:literal) => {
        concat!(
            include_str!("../../lua/prelude.lua"),
            include_str!(concat!("../../lua/", $file))
        )
    };
}

/// `with_prelude!` for a script that must run even when Redis is out of memory: the first
/// line is Redis 7's shebang with `allow-oom`. Only for scripts that never grow memory
/// (rotating and revoking rewrite a family in place), so that a full Redis never stops the
/// families that exist. Scripts without it are refused at their first write when Redis is
/// past `maxmemory`.
macro_rules! allowed_when_full {
    ($file:literal) => {
        concat!("#!lua flags=allow-oom\n", with_prelude!($file))
    };
}

pub(crate) use {allowed_when_full, with_prelude};

/// `lua/prelude.lua`: the checks the scripts share and the one definition of the family record
/// format (`encode_family` / `decode_family`).
pub const PRELUDE: &str = include_str!("../../lua/prelude.lua");

/// A script of another crate (a benchmark's) with the prelude in front, so that it writes
/// families exactly as the service's scripts do.
pub fn prefixed_with_prelude(body: &str) -> String {
    format!("{PRELUDE}{body}")
}

/// One call of a script: its KEYS and ARGV in the order its header documents, and the typed
/// reading of its reply.
pub(crate) trait ScriptCall {
    /// The reply as redis-rs converts it.
    type Reply: FromRedisValue;
    /// What the reply means.
    type Output;
    /// The span of the call.
    const OPERATION: Operation;

    /// KEYS[1]: the key a revocation's WAIT is routed by.
    fn key(&self) -> &str;

    /// The script with its KEYS and ARGV.
    fn invocation(&self) -> ScriptInvocation<'static>;

    /// Reads the reply; a reply the header does not allow is corrupt.
    fn parse(&self, reply: Self::Reply) -> Result<Self::Output, StoreError>;
}

/// The `now` argument of a script: empty, so that the script reads Redis's clock, unless a test
/// clock pins it.
fn fixed_now(fixed_ms: Option<u64>) -> String {
    fixed_ms.map(|ms| ms.to_string()).unwrap_or_default()
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn number(field: &str, what: &str) -> Result<u64, StoreError> {
    field.parse().map_err(|_| corrupt(what))
}
