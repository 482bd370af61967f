//! The gRPC edge: `coral.agent.v1.EbpfService` over the manager, plus the
//! standard health and reflection services. Requests are authenticated
//! (`auth.rs`) and converted to domain types on the way in, errors become
//! status codes in `error.rs` only. Starts, stops and extends are audited.

pub mod auth;
pub mod authority;
pub mod codes;
pub mod connections;
pub mod convert;
pub mod health;
pub mod listen;
pub mod listen_args;
pub mod tls;

use crate::domain::Kind;
use crate::error::Error;
use crate::manager::event_log::Tip;
use crate::manager::{Entry, Manager};
use auth::{Action, Authenticator, Peer, audit};
use coral_proto::v1 as pb;
use coral_proto::v1::ebpf_service_server::{EbpfService, EbpfServiceServer};
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

/// Records one GetEvents call returns when the client does not say.
const DEFAULT_PAGE: usize = 1000;
/// And at most, whatever it says.
const MAX_PAGE: usize = 10_000;

/// `StreamEvents` clients served at once unless configured otherwise.
pub const DEFAULT_MAX_STREAMS: usize = 256;

pub struct EbpfApi {
    manager: Manager,
    /// One permit per open stream: bounds what slow or idle stream clients
    /// can hold (a broadcast receiver, HTTP/2 buffers) however many connect.
    streams: Arc<Semaphore>,
    max_streams: usize,
    /// Reported in capabilities; enforced by the listener.
    connections: connections::ConnectionLimits,
}

/// The service as served: every call authenticated first, and tonic's own
/// refusals of malformed or oversized requests given client codes.
pub type Service =
    codes::ClientCodes<InterceptedService<EbpfServiceServer<EbpfApi>, Authenticator>>;

impl EbpfApi {
    pub fn new(manager: Manager, max_streams: usize) -> Self {
        Self {
            manager,
            streams: Arc::new(Semaphore::new(max_streams)),
            max_streams,
            connections: connections::ConnectionLimits::default(),
        }
    }

    /// The listener's connection limits, for capabilities.
    pub fn with_connection_limits(mut self, limits: connections::ConnectionLimits) -> Self {
        self.connections = limits;
        self
    }

    /// Requests over [`listen::MAX_REQUEST_BYTES`] are refused by tonic
    /// before they are decoded (`RESOURCE_EXHAUSTED`, see [`codes`]).
    pub fn into_service(self, auth: Authenticator) -> Service {
        codes::ClientCodes(InterceptedService::new(
            EbpfServiceServer::new(self).max_decoding_message_size(listen::MAX_REQUEST_BYTES),
            auth,
        ))
    }

    fn kind_of(&self, id: &str) -> Option<Kind> {
        self.manager.entry(id).ok().map(|e| e.spec.kind)
    }

    fn info(&self, id: &str) -> Result<pb::CollectorInfo, Error> {
        Ok((&self.manager.get(id)?).into())
    }
}

fn check_id(id: &str) -> Result<&str, Error> {
    if id.is_empty() {
        return Err(Error::InvalidArgument("collector id is required".into()));
    }
    Ok(id)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::StreamEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EbpfService for EbpfApi {
    async fn get_capabilities(
        &self,
        _: Request<pb::GetCapabilitiesRequest>,
    ) -> Result<Response<pb::Capabilities>, Status> {
        let m = &self.manager;
        Ok(Response::new(convert::capabilities(
            m.agent_id(),
            m.capabilities(),
            m.limits(),
            &self.connections,
            m.kinds(),
            m.retained_bytes(),
        )))
    }

    async fn start_collector(
        &self,
        request: Request<pb::StartCollectorRequest>,
    ) -> Result<Response<pb::StartCollectorResponse>, Status> {
        let peer = Peer::of(&request);
        let pb::StartCollectorRequest { spec } = request.into_inner();
        let result = async {
            peer.require_full(Action::Start)?;
            let spec = spec.ok_or_else(|| Error::InvalidArgument("spec is required".into()))?;
            self.manager.start(spec.try_into()?).await
        }
        .await;
        match &result {
            Ok(started) => audit(
                Action::Start,
                &peer,
                &started.view.id,
                Some(started.view.spec.kind),
                Ok(()),
            ),
            Err(err @ Error::CollectorFailed { kind, id, .. }) => {
                audit(Action::Start, &peer, id, Some(*kind), Err(err))
            }
            Err(err) => audit(Action::Start, &peer, "", None, Err(err)),
        }
        let started = result?;
        Ok(Response::new(pb::StartCollectorResponse {
            collector: Some((&started.view).into()),
            warnings: started.warnings,
        }))
    }

    async fn stop_collector(
        &self,
        request: Request<pb::StopCollectorRequest>,
    ) -> Result<Response<pb::CollectorInfo>, Status> {
        let peer = Peer::of(&request);
        let pb::StopCollectorRequest { id } = request.into_inner();
        let result = async {
            peer.require_full(Action::Stop)?;
            self.manager.stop(check_id(&id)?).await
        }
        .await;
        audit(
            Action::Stop,
            &peer,
            &id,
            self.kind_of(&id),
            result.as_ref().map(drop),
        );
        Ok(Response::new((&result?).into()))
    }

    async fn extend_collector(
        &self,
        request: Request<pb::ExtendCollectorRequest>,
    ) -> Result<Response<pb::CollectorInfo>, Status> {
        let peer = Peer::of(&request);
        let pb::ExtendCollectorRequest { id, duration_ns } = request.into_inner();
        let result = peer.require_full(Action::Extend).and_then(|()| {
            self.manager
                .extend(check_id(&id)?, Duration::from_nanos(duration_ns))
        });
        audit(
            Action::Extend,
            &peer,
            &id,
            self.kind_of(&id),
            result.as_ref().map(drop),
        );
        Ok(Response::new((&result?).into()))
    }

    async fn get_collector(
        &self,
        request: Request<pb::GetCollectorRequest>,
    ) -> Result<Response<pb::CollectorInfo>, Status> {
        let pb::GetCollectorRequest { id } = request.into_inner();
        Ok(Response::new(self.info(check_id(&id)?)?))
    }

    async fn list_collectors(
        &self,
        _: Request<pb::ListCollectorsRequest>,
    ) -> Result<Response<pb::ListCollectorsResponse>, Status> {
        Ok(Response::new(pb::ListCollectorsResponse {
            collectors: self.manager.list().iter().map(Into::into).collect(),
        }))
    }

    async fn get_events(
        &self,
        request: Request<pb::GetEventsRequest>,
    ) -> Result<Response<pb::GetEventsResponse>, Status> {
        let pb::GetEventsRequest { id, after_seq, max } = request.into_inner();
        let entry = self.manager.entry(check_id(&id)?)?;
        // Read the state first: if it is terminal, the log is already closed
        // and this page can honestly say whether it is the end.
        let state = entry.status().state;
        let max = match max as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let page = entry
            .log
            .read(after_seq, max, self.manager.limits().max_page_bytes);
        let next_after_seq = page.records.last().map_or(after_seq, |r| r.seq);
        let end = state.is_terminal() && next_after_seq >= entry.log.stats().last_seq;
        let agent_id = self.manager.agent_id();
        Ok(Response::new(pb::GetEventsResponse {
            records: page
                .records
                .iter()
                .map(|r| convert::record(r, &entry.id, agent_id, &entry.spec))
                .collect(),
            state: pb::CollectorState::from(state) as i32,
            next_after_seq,
            end,
            missed: page.missed,
        }))
    }

    type StreamEventsStream = EventStream;

    async fn stream_events(
        &self,
        request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let pb::StreamEventsRequest { id, from_seq } = request.into_inner();
        let entry = self.manager.entry(check_id(&id)?)?;
        let permit =
            self.streams
                .clone()
                .try_acquire_owned()
                .map_err(|_| Error::TooManyStreams {
                    max: self.max_streams,
                })?;
        let live = entry.log.watch();
        let state = StreamState {
            agent_id: self.manager.agent_id().to_string(),
            // Live only (0) starts after what exists; a replay after what it
            // asked to skip.
            cursor: match from_seq {
                0 => live.borrow().last_seq,
                from => from - 1,
            },
            live,
            entry,
            done: false,
            _permit: permit,
        };
        // No task is spawned: the stream is polled by tonic and dropped with
        // the connection, which drops its watch receiver with it.
        Ok(Response::new(Box::pin(futures_util::stream::unfold(
            state,
            StreamState::next,
        ))))
    }
}

/// One `StreamEvents` client: a cursor into the collector's log, woken by
/// the log's watch channel. It holds no records of its own, so a slow client
/// costs nothing but its cursor; what left retention before it read it
/// becomes a gap.
struct StreamState {
    entry: Arc<Entry>,
    agent_id: String,
    /// The last seq delivered (or reported missing).
    cursor: u64,
    live: watch::Receiver<Tip>,
    done: bool,
    /// Released when the stream ends or its client goes away.
    _permit: OwnedSemaphorePermit,
}

type Item = Result<pb::StreamEventsResponse, Status>;

impl StreamState {
    fn event(event: pb::stream_events_response::Event) -> Item {
        Ok(pb::StreamEventsResponse { event: Some(event) })
    }

    async fn next(mut self) -> Option<(Item, Self)> {
        use pb::stream_events_response::Event;
        if self.done {
            return None;
        }
        loop {
            // Seen before reading, so a push after the read wakes us below.
            let tip = *self.live.borrow_and_update();
            let page = self.entry.log.read(self.cursor, 1, u64::MAX);
            if page.missed > 0 {
                let gap = pb::Gap {
                    from_seq: self.cursor + 1,
                    count: page.missed,
                };
                self.cursor += page.missed;
                self.entry.log.note_gap(page.missed);
                return Some((Self::event(Event::Gap(gap)), self));
            }
            if let Some(r) = page.records.first() {
                self.cursor = r.seq;
                let record = convert::record(r, &self.entry.id, &self.agent_id, &self.entry.spec);
                return Some((Self::event(Event::Record(record)), self));
            }
            if tip.closed && self.cursor >= tip.last_seq {
                // The collector ended: tell the client how, then close.
                self.entry.ended().await;
                let view = crate::manager::CollectorView::from(&*self.entry);
                self.done = true;
                return Some((Self::event(Event::Ended((&view).into())), self));
            }
            if self.live.changed().await.is_err() {
                // The log is gone (reaped): nothing more will come.
                return None;
            }
        }
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
