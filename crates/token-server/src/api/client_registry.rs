//! `tokens.v1.ClientRegistry`: operator RPCs.

use std::sync::Arc;

use token_core::{NewClient, TokenService};
use token_proto::v1 as pb;
use token_proto::v1::client_registry_server::ClientRegistry as ClientRegistryRpc;
use token_store::RedisStore;
use tonic::{Request, Response, Status};

use super::{convert, refused};

pub struct ClientRegistryApi {
    service: Arc<TokenService<RedisStore>>,
}

impl ClientRegistryApi {
    pub fn new(service: Arc<TokenService<RedisStore>>) -> Self {
        Self { service }
    }
}

#[tonic::async_trait]
impl ClientRegistryRpc for ClientRegistryApi {
    async fn create_client(
        &self,
        request: Request<pb::CreateClientRequest>,
    ) -> Result<Response<pb::CreateClientResponse>, Status> {
        let req = request.into_inner();
        let issued = self
            .service
            .create_client(NewClient {
                client_id: &req.client_id,
                name: &req.name,
                client_type: &req.client_type,
                allowed_scopes: &req.allowed_scopes,
                reuse_policy: &req.reuse_policy,
                access_token_format: &req.access_token_format,
                access_token_audience: &req.access_token_audience,
            })
            .await
            .map_err(|err| refused("CreateClient", &req.client_id, err))?;
        tracing::info!(client_id = %issued.client_id, "client created");
        Ok(Response::new(convert::created_client(issued)))
    }

    async fn get_client(
        &self,
        request: Request<pb::GetClientRequest>,
    ) -> Result<Response<pb::Client>, Status> {
        let req = request.into_inner();
        let client = self
            .service
            .get_client(&req.client_id)
            .await
            .map_err(|err| refused("GetClient", &req.client_id, err))?;
        Ok(Response::new(convert::client(client)))
    }

    async fn rotate_client_secret(
        &self,
        request: Request<pb::RotateClientSecretRequest>,
    ) -> Result<Response<pb::RotateClientSecretResponse>, Status> {
        let req = request.into_inner();
        let issued = self
            .service
            .rotate_client_secret(&req.client_id)
            .await
            .map_err(|err| refused("RotateClientSecret", &req.client_id, err))?;
        tracing::info!(client_id = %issued.client_id, "client secret rotated");
        Ok(Response::new(convert::rotated_secret(issued)))
    }

    async fn delete_client(
        &self,
        request: Request<pb::DeleteClientRequest>,
    ) -> Result<Response<pb::DeleteClientResponse>, Status> {
        let req = request.into_inner();
        self.service
            .delete_client(&req.client_id)
            .await
            .map_err(|err| refused("DeleteClient", &req.client_id, err))?;
        tracing::info!(client_id = %req.client_id, "client deleted");
        Ok(Response::new(pb::DeleteClientResponse {}))
    }
}
