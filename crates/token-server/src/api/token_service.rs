//! `tokens.v1.TokenService`.

use std::sync::Arc;

use token_core::audit::{AuditStore, EventQuery, SummaryQuery};
use token_core::sessions::{SessionQuery, SubjectRevokeRequest};
use token_core::{IntrospectRequest, IssueRequest, RefreshRequest, RevokeRequest, TokenService};
use token_proto::v1 as pb;
use token_proto::v1::token_service_server::TokenService as TokenServiceRpc;
use token_store::RedisStore;
use tonic::{Request, Response, Status};

use super::{convert, refused};

/// The audit RPCs reach the audit log through token-core's [`AuditStore`] (in the server,
/// `token_store::AuditLog`).
pub struct TokenServiceApi<A> {
    service: Arc<TokenService<RedisStore>>,
    audit: A,
}

impl<A: AuditStore> TokenServiceApi<A> {
    pub fn new(service: Arc<TokenService<RedisStore>>, audit: A) -> Self {
        Self { service, audit }
    }
}

#[tonic::async_trait]
impl<A: AuditStore> TokenServiceRpc for TokenServiceApi<A> {
    async fn issue_token_pair(
        &self,
        request: Request<pb::IssueTokenPairRequest>,
    ) -> Result<Response<pb::TokenPair>, Status> {
        let req = request.into_inner();
        let pair = self
            .service
            .issue(IssueRequest {
                client_id: &req.client_id,
                subject: &req.subject,
                scopes: &req.scopes,
            })
            .await
            .map_err(|err| refused("IssueTokenPair", &req.client_id, err))?;
        tracing::info!(client_id = %req.client_id, family_id = %pair.family, "family issued");
        Ok(Response::new(convert::token_pair(pair)))
    }

    async fn refresh_token_pair(
        &self,
        request: Request<pb::RefreshTokenPairRequest>,
    ) -> Result<Response<pb::TokenPair>, Status> {
        let req = request.into_inner();
        let pair = self
            .service
            .refresh(RefreshRequest {
                client_id: &req.client_id,
                client_secret: &req.client_secret,
                refresh_token: &req.refresh_token,
                scopes: &req.scopes,
            })
            .await
            .map_err(|err| refused("RefreshTokenPair", &req.client_id, err))?;
        tracing::debug!(
            client_id = %req.client_id,
            family_id = %pair.family,
            generation = pair.generation,
            outcome = pair.rotation.as_str(),
            "refreshed"
        );
        Ok(Response::new(convert::token_pair(pair)))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let req = request.into_inner();
        let outcome = self
            .service
            .revoke(RevokeRequest {
                client_id: &req.client_id,
                client_secret: &req.client_secret,
                token: &req.token,
                token_type_hint: &req.token_type_hint,
            })
            .await
            .map_err(|err| refused("RevokeToken", &req.client_id, err))?;
        tracing::info!(client_id = %req.client_id, outcome = ?outcome, "revoke");
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }

    async fn introspect_token(
        &self,
        request: Request<pb::IntrospectTokenRequest>,
    ) -> Result<Response<pb::IntrospectTokenResponse>, Status> {
        let req = request.into_inner();
        let found = self
            .service
            .introspect(IntrospectRequest {
                token: &req.token,
                client_id: &req.client_id,
                client_secret: &req.client_secret,
            })
            .await
            .map_err(|err| refused("IntrospectToken", &req.client_id, err))?;
        Ok(Response::new(convert::introspection(found)))
    }

    async fn get_jwks(
        &self,
        _request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        // Public halves only: `Keyring::public_keys` has no way to reach a private key.
        let keyring = self.service.keyring();
        Ok(Response::new(convert::jwks(
            &self.service.jwt_settings().issuer,
            &keyring.public_keys(),
        )))
    }

    async fn list_refresh_events(
        &self,
        request: Request<pb::ListRefreshEventsRequest>,
    ) -> Result<Response<pb::ListRefreshEventsResponse>, Status> {
        let req = request.into_inner();
        let rpc = "ListRefreshEvents";
        let query = convert::optional_time_ms("since", req.since.as_ref())
            .and_then(|since| {
                let until = convert::optional_time_ms("until", req.until.as_ref())?;
                EventQuery::parse(
                    &req.client_id,
                    &req.outcomes,
                    since,
                    until,
                    req.page_size,
                    &req.page_token,
                    self.service.now_ms(),
                )
            })
            .map_err(|err| refused(rpc, &req.client_id, err))?;
        let page = self
            .audit
            .list(&query)
            .await
            .map_err(|err| refused(rpc, &req.client_id, err.into()))?;
        Ok(Response::new(convert::event_page(page)))
    }

    async fn summarize_refresh_events(
        &self,
        request: Request<pb::SummarizeRefreshEventsRequest>,
    ) -> Result<Response<pb::RefreshEventSummary>, Status> {
        let req = request.into_inner();
        let rpc = "SummarizeRefreshEvents";
        let query = convert::optional_duration("window", req.window.as_ref())
            .and_then(|window| {
                SummaryQuery::parse(
                    &req.client_id,
                    window,
                    self.audit.retention(),
                    self.service.now_ms(),
                )
            })
            .map_err(|err| refused(rpc, &req.client_id, err))?;
        let summary = self
            .audit
            .summarize(&query)
            .await
            .map_err(|err| refused(rpc, &req.client_id, err.into()))?;
        Ok(Response::new(convert::event_summary(&query, summary)))
    }

    async fn list_subject_sessions(
        &self,
        request: Request<pb::ListSubjectSessionsRequest>,
    ) -> Result<Response<pb::ListSubjectSessionsResponse>, Status> {
        let req = request.into_inner();
        let rpc = "ListSubjectSessions";
        let query =
            SessionQuery::parse(&req.subject, &req.client_id, req.page_size, &req.page_token)
                .map_err(|err| refused(rpc, &req.client_id, err))?;
        let page = self
            .service
            .list_subject_sessions(&query)
            .await
            .map_err(|err| refused(rpc, &req.client_id, err))?;
        Ok(Response::new(convert::session_page(page)))
    }

    async fn revoke_subject_sessions(
        &self,
        request: Request<pb::RevokeSubjectSessionsRequest>,
    ) -> Result<Response<pb::RevokeSubjectSessionsResponse>, Status> {
        let req = request.into_inner();
        let rpc = "RevokeSubjectSessions";
        let revoke = SubjectRevokeRequest::parse(&req.subject, &req.client_id)
            .map_err(|err| refused(rpc, &req.client_id, err))?;
        let revoked_count = self
            .service
            .revoke_subject_sessions(&revoke)
            .await
            .map_err(|err| refused(rpc, &req.client_id, err))?;
        // The subject is not logged: it may be personal data. The count and clients are.
        tracing::info!(client_id = %req.client_id, revoked_count, "subject sessions revoked");
        Ok(Response::new(pb::RevokeSubjectSessionsResponse {
            revoked_count,
        }))
    }
}
