//! `coral mcp`: a Model Context Protocol server, so an AI assistant can ask
//! the node what it can observe and run the right collectors, through the
//! CLI's own client and credentials (`--agent` or `--colony`, `--token`, TLS
//! flags).
//!
//! - [`tools`]: the tools (capabilities, start_tap, stop_tap, list_taps,
//!   tap_result, diagnose), their schemas and bounded answers;
//! - [`summary`]: every record kind as a compact summary for a model;
//! - [`diagnose`]: the symptom -> collectors rule table and the evidence;
//! - [`resources`]: the kinds' documentation as MCP resources;
//! - [`audit`]: one stderr line per tool call;
//! - [`backend`]: where calls go: one agent, or a colony's agents (fleet
//!   taps, results from the colony's store).
//!
//! The server holds the token's rights and no more: the agent decides every
//! start and stop, and a read-only token's are refused by the agent with
//! PERMISSION_DENIED, passed on as a tool error. `--read-only` also leaves
//! those tools out of the list. Transports: stdio (the default: stdout is
//! the MCP channel, everything else goes to stderr), or streamable HTTP on
//! a loopback address (`--http 127.0.0.1:8765`).

mod audit;
mod backend;
mod diagnose;
mod resources;
mod summary;
mod tools;

use crate::client::{CliError, Client, ColonyClient};
use rmcp::ServiceExt;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Serve streamable HTTP on this loopback address (e.g. 127.0.0.1:8765;
    /// port 0 picks one) instead of stdio. It has no authentication of its
    /// own, so only loopback addresses are accepted.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,

    /// Offer only the tools that read (capabilities, list_taps, tap_result),
    /// whatever the token allows.
    #[arg(long)]
    pub read_only: bool,
}

/// Serves MCP for one agent.
pub async fn run(client: Client, agent: &str, args: Args) -> anyhow::Result<()> {
    serve(backend::Backend::agent(client, agent), args).await
}

/// Serves MCP for a colony's agents: fleet taps, results from its store.
pub async fn run_colony(client: ColonyClient, colony: &str, args: Args) -> anyhow::Result<()> {
    serve(backend::Backend::colony(client, colony), args).await
}

async fn serve(backend: backend::Backend, args: Args) -> anyhow::Result<()> {
    let server = tools::CoralMcp::new(backend.clone(), args.read_only);
    let tools = server.tool_names().join(", ");
    match args.http {
        None => {
            crate::render::note!(
                "coral mcp: serving MCP on stdio for {} (tools: {tools})",
                backend.describe()
            );
            let running = server
                .serve(rmcp::transport::stdio())
                .await
                .map_err(|e| anyhow::anyhow!("starting the MCP session on stdio: {e}"))?;
            running.waiting().await?;
            Ok(())
        }
        Some(addr) => serve_http(server, addr, &backend.describe(), &tools).await,
    }
}

async fn serve_http(
    server: tools::CoralMcp,
    addr: SocketAddr,
    backend: &str,
    tools: &str,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };

    if !addr.ip().is_loopback() {
        return Err(CliError::Usage(format!(
            "--http {addr}: the MCP server has no authentication of its own (it holds the agent token's rights), so it serves loopback addresses only, e.g. 127.0.0.1:8765"
        ))
        .into());
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    let local = listener.local_addr()?;
    // Host validation (DNS rebinding): loopback names only, as bound.
    let config = StreamableHttpServerConfig::default();
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    crate::render::note!(
        "coral mcp: serving MCP over streamable HTTP at http://{local}/mcp for {backend} (tools: {tools})"
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
