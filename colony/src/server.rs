//! The gRPC edge: `coral.colony.v1.ColonyService`, health and reflection,
//! served with the agent's listener (Unix socket by default, TCP with TLS,
//! mutual TLS, bearer tokens, connection limits). Tokens work as the
//! agent's: read-only ones may list and query; registering, heartbeats and
//! starting, stopping or extending fleet taps need a full one. Changes are
//! audited under the `coral::audit` target.

use crate::colony::{Colony, now_nanos};
use crate::error::Error;
use crate::store::{AgentRow, Cursor, RecordQuery};
use coral_agent::server::auth::{Access, Authenticator, Peer};
use coral_agent::server::listen::{self, Listen, ListenError, ServeOptions};
use coral_proto::colony::v1 as cpb;
use coral_proto::colony::v1::colony_service_server::{ColonyService, ColonyServiceServer};
use coral_proto::v1 as pb;
use prost::Message;
use std::future::Future;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

/// Records one QueryRecords page holds unless asked, and at most.
const DEFAULT_PAGE: usize = 1000;
const MAX_PAGE: usize = 10_000;
/// Record bytes one QueryRecords page carries (beyond one record): well
/// under the 64 MiB clients accept.
const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;
/// Largest request the colony decodes (a RegisterRequest carries the
/// agent's capabilities: a few KiB).
const MAX_REQUEST_BYTES: usize = 256 * 1024;

pub struct ColonyApi {
    colony: Colony,
}

fn require_full(peer: &Peer, what: &str) -> Result<(), Error> {
    match peer.access {
        Access::Full => Ok(()),
        Access::ReadOnly => Err(Error::PermissionDenied(format!(
            "token {} is read-only: it may not {what}",
            peer.token.as_deref().unwrap_or("-")
        ))),
    }
}

fn audit(action: &str, peer: &Peer, id: &str, outcome: &Result<(), &Error>) {
    let peer = peer.to_string();
    match outcome {
        Ok(()) => tracing::info!(target: "coral::audit", action, id, peer, outcome = "ok"),
        Err(err) => {
            tracing::info!(target: "coral::audit", action, id, peer, outcome = "refused", error = %err)
        }
    }
}

fn check_id(id: &str) -> Result<&str, Error> {
    if id.is_empty() {
        return Err(Error::InvalidArgument("fleet tap id is required".into()));
    }
    Ok(id)
}

#[tonic::async_trait]
impl ColonyService for ColonyApi {
    async fn register(
        &self,
        request: Request<cpb::RegisterRequest>,
    ) -> Result<Response<cpb::RegisterResponse>, Status> {
        let peer = Peer::of(&request);
        let cpb::RegisterRequest {
            agent_id,
            node,
            labels,
            address,
            capabilities,
        } = request.into_inner();
        let result = async {
            require_full(&peer, "register agents")?;
            if agent_id.is_empty() || address.is_empty() {
                return Err(Error::InvalidArgument(
                    "agent_id and address are required".into(),
                ));
            }
            let now = now_nanos();
            self.colony
                .register(AgentRow {
                    agent_id: agent_id.clone(),
                    node: if node.is_empty() {
                        address.clone()
                    } else {
                        node.clone()
                    },
                    labels: labels.into_iter().collect(),
                    address: address.clone(),
                    source: cpb::AgentSource::Registered as i32,
                    registered_unix_nano: now,
                    last_seen_unix_nano: now,
                    capabilities: capabilities.unwrap_or_default().encode_to_vec(),
                    replaced_by: String::new(),
                    error: String::new(),
                })
                .await
        }
        .await;
        audit("register", &peer, &agent_id, &result.as_ref().map(|_| ()));
        result?;
        tracing::info!(agent = %agent_id, node, address, "agent registered");
        Ok(Response::new(cpb::RegisterResponse {
            heartbeat_interval_ns: self.colony.config().heartbeat.as_nanos() as u64,
            colony_id: self.colony.id().to_string(),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<cpb::HeartbeatRequest>,
    ) -> Result<Response<cpb::HeartbeatResponse>, Status> {
        let peer = Peer::of(&request);
        let cpb::HeartbeatRequest { agent_id } = request.into_inner();
        require_full(&peer, "send heartbeats")?;
        if !self
            .colony
            .store()
            .touch_agent(&agent_id, now_nanos())
            .await
            .map_err(Error::from)?
        {
            return Err(Error::NotFound(format!("unknown agent {agent_id:?}: register")).into());
        }
        Ok(Response::new(cpb::HeartbeatResponse {}))
    }

    async fn list_agents(
        &self,
        _: Request<cpb::ListAgentsRequest>,
    ) -> Result<Response<cpb::ListAgentsResponse>, Status> {
        let now = now_nanos();
        let agents = self.colony.store().agents().await.map_err(Error::from)?;
        Ok(Response::new(cpb::ListAgentsResponse {
            agents: agents
                .iter()
                .map(|a| self.colony.agent_proto(a, now))
                .collect(),
        }))
    }

    async fn start_fleet_tap(
        &self,
        request: Request<cpb::StartFleetTapRequest>,
    ) -> Result<Response<cpb::FleetTap>, Status> {
        let peer = Peer::of(&request);
        let cpb::StartFleetTapRequest { spec, selector } = request.into_inner();
        let result = async {
            require_full(&peer, "start fleet taps")?;
            let spec = spec.ok_or_else(|| Error::InvalidArgument("spec is required".into()))?;
            self.colony
                .start_tap(spec, selector.unwrap_or_default())
                .await
        }
        .await;
        let id = result.as_ref().map(|t| t.id.clone()).unwrap_or_default();
        audit("start", &peer, &id, &result.as_ref().map(|_| ()));
        Ok(Response::new(result?))
    }

    async fn stop_fleet_tap(
        &self,
        request: Request<cpb::StopFleetTapRequest>,
    ) -> Result<Response<cpb::FleetTap>, Status> {
        let peer = Peer::of(&request);
        let cpb::StopFleetTapRequest { id } = request.into_inner();
        let result = async {
            require_full(&peer, "stop fleet taps")?;
            self.colony.stop_tap(check_id(&id)?).await
        }
        .await;
        audit("stop", &peer, &id, &result.as_ref().map(|_| ()));
        Ok(Response::new(result?))
    }

    async fn extend_fleet_tap(
        &self,
        request: Request<cpb::ExtendFleetTapRequest>,
    ) -> Result<Response<cpb::FleetTap>, Status> {
        let peer = Peer::of(&request);
        let cpb::ExtendFleetTapRequest { id, duration_ns } = request.into_inner();
        let result = async {
            require_full(&peer, "extend fleet taps")?;
            if duration_ns == 0 {
                return Err(Error::InvalidArgument(
                    "invalid duration: must be greater than 0".into(),
                ));
            }
            self.colony
                .extend_tap(check_id(&id)?, Duration::from_nanos(duration_ns))
                .await
        }
        .await;
        audit("extend", &peer, &id, &result.as_ref().map(|_| ()));
        Ok(Response::new(result?))
    }

    async fn get_fleet_tap(
        &self,
        request: Request<cpb::GetFleetTapRequest>,
    ) -> Result<Response<cpb::FleetTap>, Status> {
        let cpb::GetFleetTapRequest { id } = request.into_inner();
        Ok(Response::new(self.colony.fleet_tap(check_id(&id)?).await?))
    }

    async fn list_fleet_taps(
        &self,
        _: Request<cpb::ListFleetTapsRequest>,
    ) -> Result<Response<cpb::ListFleetTapsResponse>, Status> {
        Ok(Response::new(cpb::ListFleetTapsResponse {
            taps: self.colony.list_taps().await?,
        }))
    }

    async fn query_records(
        &self,
        request: Request<cpb::QueryRecordsRequest>,
    ) -> Result<Response<cpb::QueryRecordsResponse>, Status> {
        let cpb::QueryRecordsRequest {
            fleet_tap_id,
            kind,
            nodes,
            agent_ids,
            since_unix_nano,
            until_unix_nano,
            final_only,
            cursor,
            max,
        } = request.into_inner();
        let kind = match pb::CollectorKind::try_from(kind) {
            Ok(pb::CollectorKind::Unspecified) => None,
            Ok(k) => Some(k.name().to_string()),
            Err(_) => return Err(Error::InvalidArgument(format!("unknown kind {kind}")).into()),
        };
        let after = match cursor.as_str() {
            "" => None,
            c => Some(
                Cursor::decode(c)
                    .ok_or_else(|| Error::InvalidArgument(format!("bad cursor {c:?}")))?,
            ),
        };
        let limit = match max as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let first_page = after.is_none();
        let query = RecordQuery {
            tap_id: (!fleet_tap_id.is_empty()).then(|| fleet_tap_id.clone()),
            kind,
            nodes,
            agent_ids,
            since_unix_nano,
            until_unix_nano,
            final_only,
            after,
            limit,
        };
        let mut rows = self.colony.query(&query).await?;
        let full = rows.len() == limit;
        // A page also ends before it would pass MAX_PAGE_BYTES of records
        // (always holding one): profiles are large.
        let mut bytes = 0;
        let keep = rows
            .iter()
            .position(|r| {
                bytes += r.record.len();
                bytes > MAX_PAGE_BYTES
            })
            .map_or(rows.len(), |i| i.max(1));
        let cut = keep < rows.len();
        rows.truncate(keep);
        let next_cursor = match rows.last() {
            Some(r) if full || cut => Cursor {
                time_unix_nano: r.time_unix_nano,
                agent_id: r.agent_id.clone(),
                collector_id: r.collector_id.clone(),
                seq: r.seq,
            }
            .encode(),
            _ => String::new(),
        };
        let records = rows
            .into_iter()
            .map(|r| {
                let record = pb::Record::decode(r.record.as_slice()).map_err(|e| {
                    Error::Store(crate::store::StoreError::Decode {
                        column: "record",
                        reason: e.to_string(),
                    })
                })?;
                Ok(cpb::StoredRecord {
                    fleet_tap_id: r.tap_id,
                    node: r.node,
                    record: Some(record),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let losses = if first_page && !fleet_tap_id.is_empty() {
            self.colony
                .store()
                .losses(&fleet_tap_id)
                .await
                .map_err(Error::from)?
                .into_iter()
                .map(|l| cpb::Loss {
                    fleet_tap_id: l.tap_id,
                    agent_id: l.agent_id,
                    node: l.node,
                    collector_id: l.collector_id,
                    from_seq: l.from_seq,
                    count: l.count,
                    reason: l.reason,
                    time_unix_nano: l.time_unix_nano,
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(cpb::QueryRecordsResponse {
            records,
            next_cursor,
            losses,
        }))
    }
}

type Api = ColonyServiceServer<ColonyApi>;

/// Serves the colony API, health and reflection on `listen` until
/// `shutdown` resolves.
pub async fn serve(
    colony: Colony,
    listen: &Listen,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ListenError> {
    options.check(listen)?;
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let (health, health_service) = coral_agent::server::health::health(stopping);
    health.set_serving::<Api>().await;
    let shutdown = async move {
        shutdown.await;
        health.set_not_serving::<Api>().await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let _ = stopping_tx.send(true);
    };
    let (reflection, reflection_v1alpha) =
        listen::reflection(coral_proto::colony::FILE_DESCRIPTOR_SET)?;
    let require_client_cert = options.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    let auth = Authenticator::new(options.tokens.clone(), require_client_cert);
    let api = InterceptedService::new(
        ColonyServiceServer::new(ColonyApi { colony })
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(64 * 1024 * 1024),
        auth,
    );
    let router = listen::server_builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(api);
    listen::serve_router(router, listen, &options, shutdown).await
}
