//! The Lua scripts, one file per state change, each compiled into the binary and sent to Redis
//! by SHA (EVALSHA, loading on NOSCRIPT). Their contracts are in the headers of the files.
//! Each is prefixed with `lua/prelude.lua`, the argument checks they share. They need Redis
//! 7.0 or later (`TIME` before writes, the `allow-oom` shebang).

use std::sync::LazyLock;

use deadpool_redis::redis::Script;

/// The source of `lua/<file>` with the shared prelude in front, as one literal.
macro_rules! with_prelude {
    ($file:literal) => {
        concat!(
            include_str!("../lua/prelude.lua"),
            include_str!(concat!("../lua/", $file))
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

/// The refresh state machine.
pub static ROTATE: LazyLock<Script> = LazyLock::new(|| Script::new(ROTATE_SOURCE));
pub static ISSUE: LazyLock<Script> = LazyLock::new(|| Script::new(ISSUE_SOURCE));
pub static REVOKE: LazyLock<Script> = LazyLock::new(|| Script::new(REVOKE_SOURCE));
pub static CREATE_CLIENT: LazyLock<Script> =
    LazyLock::new(|| Script::new(with_prelude!("create_client.lua")));
pub static SET_CLIENT_SECRET: LazyLock<Script> =
    LazyLock::new(|| Script::new(with_prelude!("set_client_secret.lua")));
pub static DELETE_CLIENT: LazyLock<Script> =
    LazyLock::new(|| Script::new(with_prelude!("delete_client.lua")));
/// The refresh audit: append (with trimming), one page, counts over a window.
pub static AUDIT_APPEND: LazyLock<Script> =
    LazyLock::new(|| Script::new(with_prelude!("audit_append.lua")));
pub static AUDIT_LIST: LazyLock<Script> =
    LazyLock::new(|| Script::new(with_prelude!("audit_list.lua")));
pub static AUDIT_SUMMARY: LazyLock<Script> =
    LazyLock::new(|| Script::new(with_prelude!("audit_summary.lua")));

/// Sources, public so that benchmarks can load exactly the script the service runs.
pub const ROTATE_SOURCE: &str = allowed_when_full!("rotate.lua");
pub const ISSUE_SOURCE: &str = with_prelude!("issue.lua");
pub const REVOKE_SOURCE: &str = allowed_when_full!("revoke.lua");
