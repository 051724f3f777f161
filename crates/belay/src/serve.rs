//! `belay serve`: the PostgreSQL gateway and the human API on the configured addresses, until
//! Ctrl-C or SIGTERM, then a graceful drain and a final audit checkpoint.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use belay_app::{App, AppGate};
use clap::Args;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Listen here instead of `listen.postgres` from the configuration.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Serve the human API here instead of `listen.http` from the configuration.
    #[arg(long)]
    http: Option<SocketAddr>,
}

pub(crate) fn serve(config: &Path, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let app = Arc::new(crate::open(config)?);
    let addr = args.listen.or(app.config.listen.postgres).context(
        "no address to listen on: set `listen.postgres` in the configuration or pass --listen",
    )?;
    let http = args.http.or(app.config.listen.http);
    runtime()?.block_on(gateway(app.clone(), addr, http, |bound, http| {
        if let Some(http) = http {
            eprintln!("belay: human API on http://{http}");
        }
        eprintln!("belay: gateway listening on {bound} (Ctrl-C stops it)");
    }))?;
    app.close()?;
    eprintln!("belay: gateway stopped; audit checkpoint written");
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The gateway options the configuration asks for.
fn options(app: &App) -> anyhow::Result<belay_pg::Options> {
    let listen = &app.config.listen;
    let tls = match &listen.tls {
        Some(t) => Some(belay_pg::tls::server_config(&t.cert, &t.key).map_err(anyhow::Error::msg)?),
        None => None,
    };
    Ok(belay_pg::Options {
        max_connections: listen.max_connections,
        handshake_timeout: listen.handshake_timeout,
        shutdown_grace: listen.shutdown_grace,
        tls,
        require_tls: listen.require_tls,
        allow_cleartext_password: listen.allow_cleartext_password,
        relay_threads: listen
            .relay_threads
            .unwrap_or_else(belay_pg::default_relay_threads),
        memory_budget: listen.memory_budget,
        // A text longer than the classifier reads is refused whatever it says; a little more
        // leaves room for a Parse's name and parameter types.
        max_sql_message: app.config.sql.max_input_bytes + 64 * 1024,
        ..belay_pg::Options::default()
    })
}

/// Runs the gateway on `addr` (and the human API on `http`) until SIGINT or SIGTERM; `ready`
/// hears the bound addresses.
pub(crate) async fn gateway(
    app: Arc<App>,
    addr: SocketAddr,
    http: Option<SocketAddr>,
    ready: impl FnOnce(SocketAddr, Option<SocketAddr>),
) -> anyhow::Result<()> {
    let options = options(&app)?;
    // The database is the second wall: a production environment whose roles can do more
    // than agents' grants need is not served.
    let report = belay_app::roles::inspect(&app.config).await;
    for f in report.findings.iter().filter(|f| !f.refuses()) {
        let accepted = if f.accepted {
            " (accepted in accept_risks)"
        } else {
            ""
        };
        eprintln!("belay: warning: {f}{accepted}");
    }
    for w in &report.warnings {
        eprintln!("belay: warning: {w}");
    }
    for (upstream, role, why) in &report.unreachable {
        eprintln!("belay: warning: cannot inspect role `{role}` of `{upstream}` now ({why}); sessions to a production upstream are refused until an inspection succeeds");
    }
    let refusals = report.refusals();
    if !refusals.is_empty() {
        let lines: Vec<String> = refusals.iter().map(|f| format!("  {f}")).collect();
        anyhow::bail!(
            "belay does not serve a production environment whose database roles can do more than its grants need:\n{}\n(to accept one anyway, list its name in the upstream's `accept_risks`)",
            lines.join("\n")
        );
    }
    app.guard_roles(&report);
    app.start_ledgers();
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let http_listener = match http {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a} for the human API"))?,
        ),
        None => None,
    };
    let (stop, stopped) = watch::channel(false);
    let stopping = app.clone();
    let http_bound = match http_listener {
        Some(l) => {
            let bound = l.local_addr()?;
            let mut stopping = stopped.clone();
            let api = app.clone();
            tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stopping.wait_for(|s| *s).await;
                };
                if let Err(e) = belay_app::http::serve(l, api, shutdown).await {
                    eprintln!("belay: the human API stopped: {e}");
                }
            });
            Some(bound)
        }
        None => None,
    };
    tokio::spawn(async move {
        signal().await;
        eprintln!("belay: stopping; sessions finish their transaction (Ctrl-C again to stop now)");
        stopping.stop_waiting();
        let _ = stop.send(true);
        signal().await;
        std::process::exit(130);
    });
    ready(listener.local_addr()?, http_bound);
    belay_pg::serve(listener, Arc::new(AppGate::new(app)), options, stopped).await?;
    Ok(())
}

async fn signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
