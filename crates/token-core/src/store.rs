//! The storage boundary. `token-store` implements [`Store`] over Redis; each method that
//! changes a family is one atomic script there, so every state change happens whole or not at
//! all. Types here are plain data: no Redis, no gRPC.

use std::future::Future;

use crate::client::{Client, ReusePolicy};
use crate::error::StoreError;
use crate::token::FamilyId;

/// Everything needed to start a family at generation 1.
#[derive(Debug, Clone)]
pub struct NewFamily {
    pub family: FamilyId,
    /// The resource owner: the family is one of the subject's sessions.
    pub subject: String,
    pub client_id: String,
    /// Which of the client's allowed scopes the family holds ([`crate::Scopes::mask_of`]
    /// over them): a client's scopes are fixed at registration.
    pub scope_mask: u64,
    /// `None` (production): the store's own clock says when the family starts.
    pub fixed_now_ms: Option<u64>,
    pub key_id: String,
    /// The family lapses this long after it starts, however much it is used.
    pub absolute_ttl_ms: u64,
    /// How long the family lives unused; also the store's garbage-collection TTL.
    pub idle_ttl_ms: u64,
}

/// One compare-and-rotate: the presented generation against the stored one.
#[derive(Debug, Clone)]
pub struct RotateRequest<'a> {
    pub family: FamilyId,
    /// The subject the presented token names: where the family is kept.
    pub subject: &'a str,
    pub presented_generation: u64,
    /// The presented token's rotation time: a family its subject's revocation removed is
    /// told from an expired one by it.
    pub presented_rotated_at_ms: u64,
    pub client_id: &'a str,
    /// `None` (production): the store decides with its own clock.
    pub fixed_now_ms: Option<u64>,
    /// When the request reached the service, on the one clock as the instance reads it: a
    /// request stamped before the family's last rotation is a late duplicate, not theft.
    pub stamp_ms: u64,
    /// Zero turns grace replays off.
    pub grace_ms: u64,
    pub idle_ttl_ms: u64,
    /// Signs the next generation if this call wins.
    pub signing_key_id: &'a str,
    /// The scopes the next generation's access token carries if this call wins (a mask over
    /// the family's, the caller's narrowing); `None`: all of them.
    pub access_scope_mask: Option<u64>,
    pub reuse_policy: ReusePolicy,
}

/// The family's current generation after a successful rotate, replay or roll-forward: enough
/// to re-derive its pair byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub generation: u64,
    pub rotated_at_ms: u64,
    pub key_id: String,
    /// The family's scopes, as a mask over its client's allowed scopes.
    pub scope_mask: u64,
    pub absolute_expiry_ms: u64,
    /// Which of the family's scopes this generation's access token carries (`Scopes::mask_of`), as the
    /// refresh that made it asked; `None`: all of them. A replay re-delivers exactly it.
    pub access_scope_mask: Option<u64>,
}

/// How a successful refresh came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// `p == g`: this call advanced the family.
    Rotated,
    /// `p == g-1` inside grace: the winner's pair, delivered again.
    Replayed,
    /// `p > g`: a token we issued that the store lost (failover); the family moves past it.
    RolledForward,
}

impl Rotation {
    pub fn as_str(self) -> &'static str {
        match self {
            Rotation::Rotated => "rotated",
            Rotation::Replayed => "replayed",
            Rotation::RolledForward => "rolled_forward",
        }
    }
}

/// Every answer of the refresh state machine (DESIGN.md, "The refresh state machine").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    Issued(Rotation, Current),
    /// No family: idle or absolute expiry passed. Nothing changed.
    Expired,
    /// Revoked earlier. Nothing changed.
    Revoked,
    /// The family belongs to another client. Nothing changed.
    ClientMismatch,
    /// A retired token outside grace (see [`Reuse`] for what was done about it).
    Reused(Reuse),
}

/// What the state machine did about a reused refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Revoked the family (policy `revoke-family`).
    FamilyRevoked,
    /// Refused the token and kept the family (policy `reject-only`): what enforcement would
    /// have revoked, for operators measuring it first.
    Refused,
    /// A duplicate of a request older than the current generation, arriving late (its
    /// timestamp is before the last rotation): refused without revoking under any policy.
    StaleDuplicate,
}

impl Reuse {
    pub fn family_revoked(self) -> bool {
        self == Reuse::FamilyRevoked
    }
}

/// Whether a family may still be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FamilyStatus {
    Active,
    Revoked { reason: String, at_ms: u64 },
}

/// A family as stored, for introspection, listing and tests. (The subject keys it; the
/// tokens carry it.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyState {
    pub client_id: String,
    /// The family's scopes, as a mask over its client's allowed scopes.
    pub scope_mask: u64,
    pub generation: u64,
    pub issued_at_ms: u64,
    pub rotated_at_ms: u64,
    pub key_id: String,
    pub status: FamilyStatus,
    pub absolute_expiry_ms: u64,
    /// See [`Current::access_scope_mask`].
    pub access_scope_mask: Option<u64>,
}

impl FamilyState {
    /// When the family lapses if its current generation is not used.
    pub fn expires_at_ms(&self, idle_ttl_ms: u64) -> u64 {
        self.rotated_at_ms
            .saturating_add(idle_ttl_ms)
            .min(self.absolute_expiry_ms)
    }

    /// Not revoked, and neither idle nor past its absolute expiry at `now_ms`.
    pub fn is_active(&self, now_ms: u64, idle_ttl_ms: u64) -> bool {
        self.status == FamilyStatus::Active && now_ms < self.expires_at_ms(idle_ttl_ms)
    }
}

/// The reason a family carries when its subject's sessions were revoked
/// (`RevokeSubjectSessions`).
pub const REVOKED_WITH_SUBJECT: &str = "subject";

/// What a subject revocation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectRevocation {
    /// Families issued at or before this time (the store's clock) are revoked.
    pub revoked_at_ms: u64,
    /// Active families revoked by this call, per client (sorted by client id).
    pub revoked_by_client: Vec<(String, u64)>,
}

impl SubjectRevocation {
    pub fn total(&self) -> u64 {
        self.revoked_by_client.iter().map(|(_, n)| n).sum()
    }
}

/// What a revocation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked,
    AlreadyRevoked,
    /// Expired or never existed: nothing to do (RFC 7009).
    NotFound,
    ClientMismatch,
}

/// Family and client state. Implementations make each family change atomic.
pub trait Store: Send + Sync + 'static {
    /// Creates a family at generation 1 and returns that generation, stamped by the store's
    /// clock. Fails (as corrupt) if the id already exists, and as full when the store is past
    /// its memory high-water mark.
    fn create_family(
        &self,
        family: &NewFamily,
    ) -> impl Future<Output = Result<Current, StoreError>> + Send;

    /// The refresh state machine, atomically.
    fn rotate(
        &self,
        request: &RotateRequest<'_>,
    ) -> impl Future<Output = Result<RotateOutcome, StoreError>> + Send;

    /// Revokes the family if it belongs to `client_id`, at the store's time (or `fixed_now_ms`).
    fn revoke(
        &self,
        subject: &str,
        family: FamilyId,
        client_id: &str,
        reason: &str,
        fixed_now_ms: Option<u64>,
    ) -> impl Future<Output = Result<RevokeOutcome, StoreError>> + Send;

    /// Reads a family; `None` when the store no longer has it. A family its subject's
    /// revocation covers reads as revoked.
    fn family(
        &self,
        subject: &str,
        family: FamilyId,
    ) -> impl Future<Output = Result<Option<FamilyState>, StoreError>> + Send;

    /// Every family the store keeps for `subject`, in no order, revoked and lapsed ones
    /// included (as [`Store::family`] reads each). Reads without blocking the store for long,
    /// whatever the number.
    fn subject_families(
        &self,
        subject: &str,
    ) -> impl Future<Output = Result<Vec<(FamilyId, FamilyState)>, StoreError>> + Send;

    /// Revokes every family of `subject` (or only `client_id`'s) issued until now, atomically
    /// against their refreshes, and counts those that were active (`idle_ttl_ms` decides which
    /// had lapsed). Families issued after it returns are unaffected.
    fn revoke_subject(
        &self,
        subject: &str,
        client_id: Option<&str>,
        idle_ttl_ms: u64,
        fixed_now_ms: Option<u64>,
    ) -> impl Future<Output = Result<SubjectRevocation, StoreError>> + Send;

    /// Registers a client; `false` when the id exists or existed.
    fn create_client(
        &self,
        client: &Client,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// A live (not deleted) client.
    fn client(
        &self,
        client_id: &str,
    ) -> impl Future<Output = Result<Option<Client>, StoreError>> + Send;

    /// Replaces a live client's secret hash; `false` when there is no such client.
    fn set_client_secret(
        &self,
        client_id: &str,
        secret_hash: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes a live client, keeping its id reserved; `false` when there is no such client.
    fn delete_client(
        &self,
        client_id: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}
