//! Load shedding: at most `limit` calls to the token services run at once on this instance;
//! a call beyond that is refused at once with RESOURCE_EXHAUSTED (reason OVERLOADED, with
//! RetryInfo) instead of queueing without bound, so admitted calls keep their latency and
//! callers learn to back off. Health and reflection are not limited: probes must answer
//! exactly when the instance is busiest.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tower::Service;

use crate::status::{EdgeError, to_status};

/// The permits shared by every limited service of one server.
#[derive(Clone)]
pub struct Limit(Arc<Semaphore>);

impl Limit {
    pub fn new(max_concurrent_calls: usize) -> Self {
        Self(Arc::new(Semaphore::new(max_concurrent_calls.max(1))))
    }

    /// Wraps a generated gRPC service so that its calls take a permit.
    pub fn wrap<S>(&self, inner: S) -> Overload<S> {
        Overload {
            inner,
            permits: self.0.clone(),
        }
    }
}

/// A gRPC service whose calls are admitted only while a permit is free.
#[derive(Clone)]
pub struct Overload<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S, B> Service<http::Request<B>> for Overload<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let call = self.inner.call(request);
                Box::pin(async move {
                    let response = call.await;
                    drop(permit);
                    response
                })
            }
            Err(_) => {
                let status = to_status(&EdgeError::Overloaded);
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

impl<S: NamedService> NamedService for Overload<S> {
    const NAME: &'static str = S::NAME;
}
