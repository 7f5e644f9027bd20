//! Who may call the operator RPCs: the methods that mint sessions, manage clients or read the
//! audit, so only callers named in the operator policy get them. tokens.proto marks each
//! method `(access) = ACCESS_PUBLIC` or `ACCESS_OPERATOR`; a method of the package without
//! ACCESS_PUBLIC is an operator RPC (deny by default). The public ones (they authenticate the
//! OAuth client themselves), health and reflection stay open to whoever reaches the port.
//!
//! A caller is named by its mTLS client certificate (a URI SAN such as a SPIFFE ID, or a DNS
//! SAN; the certificate was already verified against the CA bundle during the handshake) or,
//! where mTLS is not available, by a static bearer credential sent as
//! `authorization: Bearer <credential>`, of which the policy holds only the SHA-256.
//!
//! The policy file (TOML):
//!
//! ```toml
//! [[operator]]
//! name = "provisioning"                                     # shown in logs
//! spiffe_id = "spiffe://prod.example/ns/iam/sa/provisioner" # or dns_name = "..."
//!
//! [[operator]]
//! name = "ci"
//! bearer_sha256 = "<64 hex digits: sha256 of the credential>"
//! rpcs = ["IssueTokenPair"]                                 # optional; default: all
//! ```

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use token_proto::v1::Access;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use crate::status::EdgeError;

/// The methods of the contract, split by their `(tokens.v1.access)` option, read once.
struct Rpcs {
    /// gRPC paths of the methods marked public.
    public: Vec<String>,
    /// (gRPC path, name) of every other method of the package.
    operator: Vec<(String, String)>,
}

static RPCS: LazyLock<Rpcs> = LazyLock::new(|| {
    let (public, operator) = token_proto::access::methods()
        .into_iter()
        .partition::<Vec<_>, _>(|m| m.access == Access::Public);
    Rpcs {
        public: public.into_iter().map(|m| m.path).collect(),
        operator: operator.into_iter().map(|m| (m.path, m.name)).collect(),
    }
});

/// The name given to a path of our package that the descriptors do not list.
const UNLISTED: &str = "an unlisted tokens.v1 method";

/// The name of the operator RPC at `path`, or `None` for a public one. Deny by default: a
/// method of the contract's package is an operator RPC unless the contract marks it public.
pub fn operator_rpc(path: &str) -> Option<&'static str> {
    let rpcs = &*RPCS;
    let ours = path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(token_proto::access::PACKAGE))
        .is_some_and(|rest| rest.starts_with('.'));
    if !ours || rpcs.public.iter().any(|p| p == path) {
        return None;
    }
    Some(
        rpcs.operator
            .iter()
            .find(|(p, _)| p == path)
            .map_or(UNLISTED, |(_, name)| name.as_str()),
    )
}

/// The names of the operator RPCs, as the policy's `rpcs` takes them.
pub fn operator_rpc_names() -> impl Iterator<Item = &'static str> {
    RPCS.operator.iter().map(|(_, name)| name.as_str())
}

/// Why a policy file was refused. Never quotes a credential.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the operator policy {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("operator policy {path}: {reason}")]
    Invalid { path: String, reason: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    operator: Vec<OperatorEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatorEntry {
    name: String,
    spiffe_id: Option<String>,
    dns_name: Option<String>,
    bearer_sha256: Option<String>,
    rpcs: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
enum Credential {
    /// A URI SAN of the client certificate (SPIFFE IDs are URI SANs).
    Uri(String),
    /// A DNS SAN of the client certificate.
    Dns(String),
    /// SHA-256 of the bearer credential.
    Bearer([u8; 32]),
}

#[derive(Debug, Clone)]
struct Operator {
    name: String,
    credential: Credential,
    /// `None`: every operator RPC.
    rpcs: Option<BTreeSet<&'static str>>,
}

/// Who may call the operator RPCs.
#[derive(Debug, Clone)]
pub struct OperatorPolicy(Rule);

#[derive(Debug, Clone)]
enum Rule {
    /// Everyone: for in-process tests only (the binary never chooses it).
    AllowAll,
    /// Only the listed callers; an empty list refuses everyone.
    Listed(Arc<[Operator]>),
}

impl OperatorPolicy {
    /// Nobody: what a server started without a policy file enforces.
    pub fn deny_all() -> Self {
        Self(Rule::Listed(Arc::from(Vec::new())))
    }

    /// Everyone. For in-process tests; the binary always enforces a policy.
    pub fn allow_all() -> Self {
        Self(Rule::AllowAll)
    }

    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| PolicyError::Invalid {
            path: shown,
            reason,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut operators = Vec::new();
        for entry in file.operator {
            let name = entry.name.trim().to_owned();
            if name.is_empty() {
                return Err("an operator has an empty name".into());
            }
            let credential = match (entry.spiffe_id, entry.dns_name, entry.bearer_sha256) {
                (Some(uri), None, None) if !uri.is_empty() => Credential::Uri(uri),
                (None, Some(dns), None) if !dns.is_empty() => {
                    Credential::Dns(dns.to_ascii_lowercase())
                }
                (None, None, Some(hex)) => {
                    Credential::Bearer(parse_sha256(&hex).ok_or_else(|| {
                        format!("operator {name}: bearer_sha256 must be 64 hex digits")
                    })?)
                }
                _ => {
                    return Err(format!(
                        "operator {name}: give exactly one of spiffe_id, dns_name, bearer_sha256"
                    ));
                }
            };
            let rpcs = match entry.rpcs {
                None => None,
                Some(rpcs) => Some(
                    rpcs.iter()
                        .map(|rpc| {
                            known_rpc(rpc).ok_or_else(|| {
                                format!(
                                    "operator {name}: `{rpc}` is not an operator RPC (one of {})",
                                    operator_rpc_names().collect::<Vec<_>>().join(", ")
                                )
                            })
                        })
                        .collect::<Result<BTreeSet<_>, _>>()?,
                ),
            };
            operators.push(Operator {
                name,
                credential,
                rpcs,
            });
        }
        Ok(Self(Rule::Listed(operators.into())))
    }

    /// Number of operators listed (`None` for allow-all), for the startup log.
    pub fn operators(&self) -> Option<usize> {
        match &self.0 {
            Rule::AllowAll => None,
            Rule::Listed(operators) => Some(operators.len()),
        }
    }

    /// Whether any operator is named by a bearer credential (which plaintext would expose).
    pub fn has_bearer_credentials(&self) -> bool {
        match &self.0 {
            Rule::AllowAll => false,
            Rule::Listed(operators) => operators
                .iter()
                .any(|o| matches!(o.credential, Credential::Bearer(_))),
        }
    }

    /// The operator allowed to call `rpc`, if the caller is one.
    fn authorize(&self, caller: &Caller, rpc: &'static str) -> Result<Option<&str>, ()> {
        let operators = match &self.0 {
            Rule::AllowAll => return Ok(None),
            Rule::Listed(operators) => operators,
        };
        let mut allowed = None;
        // Every entry is compared (no early exit), so timing says nothing about which matched.
        for operator in operators.iter() {
            let matches = match &operator.credential {
                Credential::Uri(uri) => caller.uris.iter().any(|u| u == uri),
                Credential::Dns(dns) => caller.dns_names.iter().any(|d| d == dns),
                Credential::Bearer(hash) => caller
                    .bearer_sha256
                    .is_some_and(|presented| bool::from(presented.ct_eq(hash))),
            };
            let permits = operator.rpcs.as_ref().is_none_or(|rpcs| rpcs.contains(rpc));
            if matches && permits && allowed.is_none() {
                allowed = Some(operator.name.as_str());
            }
        }
        allowed.map(Some).ok_or(())
    }
}

fn known_rpc(name: &str) -> Option<&'static str> {
    operator_rpc_names().find(|known| *known == name)
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The SHA-256 of a bearer credential in hex, as the policy file wants it.
pub fn bearer_sha256_hex(credential: &str) -> String {
    format!("{:x}", Sha256::digest(credential.as_bytes()))
}

/// What the transport says about the caller.
#[derive(Debug, Default)]
struct Caller {
    uris: Vec<String>,
    dns_names: Vec<String>,
    bearer_sha256: Option<[u8; 32]>,
}

impl Caller {
    fn of<B>(request: &http::Request<B>) -> Self {
        let mut caller = Caller::default();
        let certs = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs());
        if let Some(leaf) = certs.as_deref().and_then(|certs| certs.first()) {
            read_sans(leaf.as_ref(), &mut caller);
        }
        caller.bearer_sha256 = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, credential) = value.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| Sha256::digest(credential.trim().as_bytes()).into())
            });
        caller
    }
}

/// The URI and DNS subject alternative names of a (verified) certificate.
fn read_sans(der: &[u8], caller: &mut Caller) {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return;
    };
    let Ok(Some(sans)) = cert.subject_alternative_name() else {
        return;
    };
    for name in &sans.value.general_names {
        match name {
            GeneralName::URI(uri) => caller.uris.push((*uri).to_owned()),
            GeneralName::DNSName(dns) => caller.dns_names.push(dns.to_ascii_lowercase()),
            _ => {}
        }
    }
}

/// Refuses operator RPCs to callers the policy does not name, before they reach a handler.
#[derive(Clone)]
pub struct OperatorGateLayer {
    policy: OperatorPolicy,
}

impl OperatorGateLayer {
    pub fn new(policy: OperatorPolicy) -> Self {
        Self { policy }
    }
}

impl<S> Layer<S> for OperatorGateLayer {
    type Service = OperatorGate<S>;

    fn layer(&self, inner: S) -> OperatorGate<S> {
        OperatorGate {
            inner,
            policy: self.policy.clone(),
        }
    }
}

#[derive(Clone)]
pub struct OperatorGate<S> {
    inner: S,
    policy: OperatorPolicy,
}

impl<S, B> Service<http::Request<B>> for OperatorGate<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    /// No allocation per call: the inner call's future, or the refusal, ready.
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(rpc) = operator_rpc(request.uri().path()) else {
            return Either::Left(self.inner.call(request));
        };
        match self.policy.authorize(&Caller::of(&request), rpc) {
            Ok(operator) => {
                if let Some(operator) = operator {
                    tracing::debug!(rpc, operator, "operator call");
                }
                Either::Left(self.inner.call(request))
            }
            Err(()) => {
                tracing::warn!(
                    rpc,
                    "operator RPC refused: caller not in the operator policy"
                );
                let status = crate::status::to_status(&EdgeError::NotAuthorized(rpc));
                Either::Right(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uris: &[&str], dns: &[&str], bearer: Option<&str>) -> Caller {
        Caller {
            uris: uris.iter().map(|s| s.to_string()).collect(),
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
            bearer_sha256: bearer.map(|b| Sha256::digest(b.as_bytes()).into()),
        }
    }

    #[test]
    fn operator_rpcs_are_exactly_the_minting_session_and_audit_ones() {
        for (path, want) in [
            (
                "/tokens.v1.TokenService/IssueTokenPair",
                Some("IssueTokenPair"),
            ),
            (
                "/tokens.v1.TokenService/ListRefreshEvents",
                Some("ListRefreshEvents"),
            ),
            (
                "/tokens.v1.TokenService/SummarizeRefreshEvents",
                Some("SummarizeRefreshEvents"),
            ),
            (
                "/tokens.v1.TokenService/ListSubjectSessions",
                Some("ListSubjectSessions"),
            ),
            (
                "/tokens.v1.TokenService/RevokeSubjectSessions",
                Some("RevokeSubjectSessions"),
            ),
            (
                "/tokens.v1.ClientRegistry/CreateClient",
                Some("CreateClient"),
            ),
            ("/tokens.v1.ClientRegistry/GetClient", Some("GetClient")),
            (
                "/tokens.v1.ClientRegistry/RotateClientSecret",
                Some("RotateClientSecret"),
            ),
            (
                "/tokens.v1.ClientRegistry/DeleteClient",
                Some("DeleteClient"),
            ),
            // Deny by default: what the contract does not mark public.
            ("/tokens.v1.ClientRegistry/SomethingNew", Some(UNLISTED)),
            ("/tokens.v1.TokenService/SomethingNew", Some(UNLISTED)),
            ("/tokens.v1.Elsewhere/Anything", Some(UNLISTED)),
            ("/tokens.v1.TokenService/RefreshTokenPair", None),
            ("/tokens.v1.TokenService/RevokeToken", None),
            ("/tokens.v1.TokenService/IntrospectToken", None),
            ("/grpc.health.v1.Health/Check", None),
            (
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                None,
            ),
            (
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                None,
            ),
            ("/tokens.v1x.Other/Method", None),
        ] {
            assert_eq!(operator_rpc(path), want, "{path}");
        }
        assert_eq!(
            operator_rpc_names().collect::<BTreeSet<_>>(),
            BTreeSet::from([
                "IssueTokenPair",
                "ListRefreshEvents",
                "SummarizeRefreshEvents",
                "ListSubjectSessions",
                "RevokeSubjectSessions",
                "CreateClient",
                "GetClient",
                "RotateClientSecret",
                "DeleteClient",
            ])
        );
    }

    #[test]
    fn policy_names_callers_by_san_or_bearer_and_limits_rpcs() {
        let policy = OperatorPolicy::parse(&format!(
            r#"
            [[operator]]
            name = "provisioning"
            spiffe_id = "spiffe://example.org/provisioner"

            [[operator]]
            name = "oncall"
            dns_name = "OnCall.Ops.Example"

            [[operator]]
            name = "ci"
            bearer_sha256 = "{}"
            rpcs = ["IssueTokenPair"]
            "#,
            bearer_sha256_hex("s3cret")
        ))
        .unwrap();
        let spiffe = caller(&["spiffe://example.org/provisioner"], &[], None);
        assert_eq!(
            policy.authorize(&spiffe, "CreateClient"),
            Ok(Some("provisioning"))
        );
        let dns = caller(&[], &["oncall.ops.example"], None);
        assert_eq!(
            policy.authorize(&dns, "ListRefreshEvents"),
            Ok(Some("oncall"))
        );
        let ci = caller(&[], &[], Some("s3cret"));
        assert_eq!(policy.authorize(&ci, "IssueTokenPair"), Ok(Some("ci")));
        assert_eq!(policy.authorize(&ci, "CreateClient"), Err(()));
        let wrong = caller(&["spiffe://example.org/other"], &[], Some("guess"));
        assert_eq!(policy.authorize(&wrong, "IssueTokenPair"), Err(()));
        assert_eq!(
            OperatorPolicy::deny_all().authorize(&spiffe, "GetClient"),
            Err(())
        );
    }

    #[test]
    fn bad_policies_are_refused_without_quoting_credentials() {
        for (text, want) in [
            ("[[operator]]\nname = \"x\"\n", "exactly one of"),
            (
                "[[operator]]\nname = \"x\"\nspiffe_id = \"a\"\ndns_name = \"b\"\n",
                "exactly one of",
            ),
            (
                "[[operator]]\nname = \"x\"\nbearer_sha256 = \"plaintext-secret\"\n",
                "64 hex digits",
            ),
            (
                "[[operator]]\nname = \"x\"\nspiffe_id = \"a\"\nrpcs = [\"RefreshTokenPair\"]\n",
                "not an operator RPC",
            ),
            ("[[operator]]\nname = \"x\"\nuri = \"a\"\n", "unknown field"),
        ] {
            let err = OperatorPolicy::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
            assert!(!err.contains("plaintext-secret"), "{err}");
        }
    }
}
