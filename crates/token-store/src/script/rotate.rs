//! `lua/rotate.lua`, the refresh state machine: compare the presented generation with the
//! stored one and rotate, replay, roll forward or refuse, in one atomic step.

use std::sync::LazyLock;

use deadpool_redis::redis::{Script, ScriptInvocation};
use token_core::StoreError;
use token_core::store::{Current, Reuse, RotateOutcome, RotateRequest, Rotation};

use super::{ScriptCall, allowed_when_full, corrupt, fixed_now, number, with_prelude};
use crate::lanes::Operation;

/// Runs past `maxmemory`: a rotation rewrites its family in place.
pub const SOURCE: &str = allowed_when_full!("rotate.lua");
pub static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCE));

/// One rotation of a family in its subject's hash at `key`.
pub(crate) struct Rotate<'a> {
    pub key: String,
    pub request: &'a RotateRequest<'a>,
}

impl ScriptCall for Rotate<'_> {
    type Reply = Vec<String>;
    type Output = RotateOutcome;
    const OPERATION: Operation = Operation::script("rotate", "EVALSHA rotate");

    fn key(&self) -> &str {
        &self.key
    }

    fn invocation(&self) -> ScriptInvocation<'static> {
        let req = self.request;
        let mut invocation = SCRIPT.prepare_invoke();
        invocation
            .key(&self.key)
            .arg(req.presented_generation)
            .arg(req.client_id)
            .arg(fixed_now(req.fixed_now_ms))
            .arg(req.grace_ms)
            .arg(req.idle_ttl_ms)
            .arg(req.signing_key_id)
            .arg(req.reuse_policy.as_str())
            .arg(req.stamp_ms)
            .arg(
                req.access_scope_mask
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            )
            .arg(req.family.to_string())
            .arg(req.presented_rotated_at_ms);
        invocation
    }

    fn parse(&self, reply: Vec<String>) -> Result<RotateOutcome, StoreError> {
        let outcome = reply
            .first()
            .ok_or_else(|| corrupt("rotate: empty reply"))?;
        let rotation = match outcome.as_str() {
            "expired" => return Ok(RotateOutcome::Expired),
            "revoked" => return Ok(RotateOutcome::Revoked),
            "client_mismatch" => return Ok(RotateOutcome::ClientMismatch),
            "reused_revoked" => return Ok(RotateOutcome::Reused(Reuse::FamilyRevoked)),
            "reused_rejected" => return Ok(RotateOutcome::Reused(Reuse::Refused)),
            "reused_stale" => return Ok(RotateOutcome::Reused(Reuse::StaleDuplicate)),
            "rotated" => Rotation::Rotated,
            "replayed" => Rotation::Replayed,
            "rolled_forward" => Rotation::RolledForward,
            _ => return Err(corrupt("rotate: unknown outcome")),
        };
        let [
            _,
            generation,
            rotated_at,
            key_id,
            scope_mask,
            absolute_expiry,
            access_mask,
        ] = reply.as_slice()
        else {
            return Err(corrupt("rotate: short reply"));
        };
        Ok(RotateOutcome::Issued(
            rotation,
            Current {
                generation: number(generation, "rotate: bad generation")?,
                rotated_at_ms: number(rotated_at, "rotate: bad rotation time")?,
                key_id: key_id.clone(),
                scope_mask: u64::from_str_radix(scope_mask, 16)
                    .map_err(|_| corrupt("rotate: bad scope mask"))?,
                absolute_expiry_ms: number(absolute_expiry, "rotate: bad expiry")?,
                access_scope_mask: match access_mask.as_str() {
                    "" => None,
                    mask => Some(
                        mask.parse()
                            .map_err(|_| corrupt("rotate: bad access mask"))?,
                    ),
                },
            },
        ))
    }
}
