//! `grpc.health.v1.Health` as the health checking protocol has it.
//!
//! `Check` is tonic-health's. `Watch` is tonic-health's for a known service;
//! for an unknown one tonic-health ends the call with `NOT_FOUND`, where the
//! protocol says to answer `SERVICE_UNKNOWN` and keep the call open. The
//! agent's services are all registered before it serves, so an unknown
//! service stays unknown: its watch sends that one message and then waits.
//!
//! Every `Watch` ends when the agent shuts down: an open one would
//! otherwise hold its connection, and graceful shutdown waits for every
//! connection to close.

use futures_util::{Stream, StreamExt};
use std::pin::Pin;
use tokio::sync::watch;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

pub struct AgentHealth {
    inner: HealthService,
    stopping: watch::Receiver<bool>,
}

/// The reporter that sets statuses, and the service to serve; `stopping`
/// turning true ends every watch.
pub fn health(stopping: watch::Receiver<bool>) -> (HealthReporter, HealthServer<AgentHealth>) {
    let reporter = HealthReporter::new();
    let inner = HealthService::from_health_reporter(reporter.clone());
    (reporter, HealthServer::new(AgentHealth { inner, stopping }))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for AgentHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let statuses: WatchStream = match self.inner.watch(request).await {
            Ok(known) => Box::pin(known.into_inner()),
            Err(status) if status.code() == Code::NotFound => {
                let unknown = HealthCheckResponse {
                    status: ServingStatus::ServiceUnknown as i32,
                };
                Box::pin(
                    futures_util::stream::once(async move { Ok(unknown) })
                        .chain(futures_util::stream::pending()),
                )
            }
            Err(status) => return Err(status),
        };
        let mut stopping = self.stopping.clone();
        let stopped = async move {
            // An error means the sender is gone: the server is gone too.
            let _ = stopping.wait_for(|stopping| *stopping).await;
        };
        Ok(Response::new(Box::pin(statuses.take_until(stopped))))
    }
}
