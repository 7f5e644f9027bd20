//! The Lua scripts, one file per state change, each compiled into the binary and sent to Redis
//! by SHA (EVALSHA, loading on NOSCRIPT). Their contracts are in the headers of the files.

use std::sync::LazyLock;

use deadpool_redis::redis::Script;

/// The refresh state machine.
pub static ROTATE: LazyLock<Script> = LazyLock::new(|| Script::new(ROTATE_SOURCE));
pub static ISSUE: LazyLock<Script> = LazyLock::new(|| Script::new(ISSUE_SOURCE));
pub static REVOKE: LazyLock<Script> = LazyLock::new(|| Script::new(REVOKE_SOURCE));
pub static CREATE_CLIENT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/create_client.lua")));
pub static SET_CLIENT_SECRET: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/set_client_secret.lua")));
pub static DELETE_CLIENT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/delete_client.lua")));

/// Sources, public so that benchmarks can load exactly the script the service runs.
pub const ROTATE_SOURCE: &str = include_str!("../lua/rotate.lua");
pub const ISSUE_SOURCE: &str = include_str!("../lua/issue.lua");
pub const REVOKE_SOURCE: &str = include_str!("../lua/revoke.lua");
