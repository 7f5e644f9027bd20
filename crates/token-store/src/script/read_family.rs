//! `lua/read_family.lua`: one family with the subject revocation marker that applies to it.

use std::sync::LazyLock;

use deadpool_redis::redis::{Script, ScriptInvocation, Value};
use token_core::store::FamilyState;
use token_core::{FamilyId, StoreError};

use super::{ScriptCall, corrupt, with_prelude};
use crate::family_record;
use crate::lanes::Operation;

pub const SOURCE: &str = with_prelude!("read_family.lua");
pub static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCE));

/// Reads `family` from its subject's hash at `key`.
pub(crate) struct ReadFamily {
    pub key: String,
    pub family: FamilyId,
}

impl ScriptCall for ReadFamily {
    type Reply = (Value, u64);
    type Output = Option<FamilyState>;
    const OPERATION: Operation = Operation::script("read_family", "EVALSHA read_family");

    fn key(&self) -> &str {
        &self.key
    }

    fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = SCRIPT.prepare_invoke();
        invocation.key(&self.key).arg(self.family.to_string());
        invocation
    }

    fn parse(&self, (record, revoked_at): (Value, u64)) -> Result<Option<FamilyState>, StoreError> {
        let record = match record {
            Value::Nil | Value::Boolean(false) | Value::Int(0) => return Ok(None),
            Value::BulkString(bytes) => {
                String::from_utf8(bytes).map_err(|_| corrupt("read_family: record is not text"))?
            }
            _ => return Err(corrupt("read_family: unexpected reply")),
        };
        let family = family_record::decode(&record)?;
        Ok(Some(family_record::apply_marker(family, revoked_at)))
    }
}
