//! Wires the parts together: store, hierarchy, API and dispatcher.
//!
//! Shutdown is explicit: on SIGINT/SIGTERM the listener stops taking requests, in-flight
//! requests finish, the dispatcher stops claiming and records the attempts in flight;
//! anything not yet delivered stays in the store for the next start.
//!
//! The API's accept loop bounds what clients can hold: a request's headers must arrive
//! within `TIDINGS_API_HEADER_TIMEOUT` (an idle keep-alive connection is closed after it
//! too), the whole request within `TIDINGS_API_REQUEST_TIMEOUT`, and at most
//! `TIDINGS_API_MAX_CONNECTIONS` connections are open at once; one beyond is answered 503
//! and closed at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper_util::rt::{TokioIo, TokioTimer};
use tidings_egress::{AddressPolicy, Egress, EgressConfig};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::changes::{Hierarchy, HierarchyRules};
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::delivery::secrets::SecretBox;
use crate::delivery::{Dispatcher, DispatcherConfig};
use crate::domain::validate::UrlRules;
use crate::metrics::Metrics;
use crate::notify::Mailer;
use crate::retention::{Pruner, PrunerConfig};
use crate::store;

/// Everything `serve` runs, built but not started.
pub struct App {
    pub state: AppState,
    pub dispatcher: Dispatcher,
    /// Sends failure e-mails; run it like the dispatcher.
    pub mailer: Mailer,
    /// Prunes what is past `TIDINGS_RETENTION` (`None` when it is off); run it likewise.
    pub pruner: Option<Pruner>,
}

/// Opens the store (creating and migrating it), the secret key and the outbound client.
pub async fn build(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
    let store = store::open_with(&settings.database_url, &store_options(settings)?)
        .await
        .with_context(|| format!("opening the store at {}", redact(&settings.database_url)))?;
    if store.backend() == "sqlite" {
        // One process owns a SQLite file: claims left by a previous run are over.
        let n = store.release_all(clock.now()).await?;
        if n > 0 {
            tracing::warn!(
                count = n,
                "webhooks were in flight when the last run stopped; they are due again now"
            );
        }
    }
    let keys = SecretBox::load(settings.secret_key.as_deref(), &settings.secret_key_file)
        .context("loading the key that seals signing secrets")?;
    let egress = Egress::new(egress_config(settings)?).context("building the HTTPS client")?;
    let rules = HierarchyRules {
        url_rules: UrlRules {
            allow_http: settings.allow_http,
        },
        meeting_base_url: settings.meeting_base_url.clone(),
    };
    let metrics = Arc::new(Metrics::new());
    let mailer = Mailer::new(store.clone(), clock.clone(), metrics.clone(), settings)?;
    let dispatcher = Dispatcher::new(
        store.clone(),
        egress,
        clock.clone(),
        keys.clone(),
        metrics.clone(),
        DispatcherConfig {
            schedule: settings.retry_schedule.clone(),
            request_timeout: settings.request_timeout,
            max_in_flight: settings.max_in_flight.max(1),
            per_destination: settings.per_destination.max(1),
            backpressure_wait: settings.backpressure_wait,
            ..DispatcherConfig::default()
        },
    );
    let hierarchy = Arc::new(Hierarchy::new(
        store.clone(),
        clock.clone(),
        rules,
        dispatcher.handoff(),
        keys,
    ));
    let auth = Arc::new(
        crate::api::auth::Auth::setup(settings.admin_key.as_deref(), store.as_ref(), clock.now())
            .await?
            .with_failure_limit(settings.auth_failure_limit),
    );
    let pruner = settings.retention.0.map(|retention| {
        Pruner::new(
            store.clone(),
            clock.clone(),
            metrics.clone(),
            PrunerConfig::new(retention),
        )
    });
    Ok(App {
        state: AppState {
            hierarchy,
            metrics,
            auth,
            retention: settings.retention.0,
        },
        dispatcher,
        mailer,
        pruner,
    })
}

fn store_options(settings: &Settings) -> anyhow::Result<store::StoreOptions> {
    if settings.database_connections == 0 {
        anyhow::bail!("TIDINGS_DATABASE_CONNECTIONS must be at least 1");
    }
    Ok(store::StoreOptions {
        acquire_timeout: Some(settings.store_timeout),
        write_connections: settings.database_connections,
        // SQLite's default page: 4 KiB.
        sqlite_max_pages: settings.sqlite_max_mib.map(|mib| mib * 256),
    })
}

fn egress_config(settings: &Settings) -> anyhow::Result<EgressConfig> {
    let policy =
        AddressPolicy::parse_allow_list(&settings.ssrf_allow).context("TIDINGS_SSRF_ALLOW")?;
    let extra_ca_pem = match &settings.ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading TIDINGS_CA_FILE {}", path.display()))?,
        ),
        None => None,
    };
    Ok(EgressConfig {
        timeout: settings.request_timeout,
        connect_timeout: settings.request_timeout.min(Duration::from_secs(5)),
        user_agent: format!("Tidings/{} (+webhooks)", env!("CARGO_PKG_VERSION")),
        extra_ca_pem,
        allow_http: settings.allow_http,
        policy,
        pool_max_idle_per_host: settings.per_destination.max(1),
    })
}

/// Runs `tidings serve` until a shutdown signal.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let App {
        state,
        dispatcher,
        mailer,
        pruner,
    } = build(&settings, Arc::new(SystemClock)).await?;
    if settings.allow_http {
        tracing::warn!(
            "TIDINGS_ALLOW_HTTP is on: http:// webhook URLs are accepted (development only)"
        );
    }
    if !settings.ssrf_allow.is_empty() {
        tracing::warn!(allow = %settings.ssrf_allow, "SSRF guard: these networks are exempt");
    }
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        store = state.hierarchy.store().backend(),
        database = %redact(&settings.database_url),
        retry_schedule = %settings.retry_schedule,
        retention = %settings.retention,
        "tidings is listening"
    );
    let stop = CancellationToken::new();
    let dispatching = tokio::spawn(dispatcher.run(stop.clone()));
    let mailing = tokio::spawn(mailer.run(stop.clone()));
    let pruning = pruner.map(|p| tokio::spawn(p.run(stop.clone())));
    // A line on stdout that scripts and tests can wait for.
    println!("tidings listening on http://{addr}");
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal_stop.cancel();
    });
    let metrics = state.metrics.clone();
    let app = api::router_with(
        state,
        api::Limits {
            request_timeout: settings.api_request_timeout,
        },
    );
    accept_loop(listener, app, &settings, metrics, stop.clone()).await;
    stop.cancel();
    let _ = dispatching.await;
    let _ = mailing.await;
    if let Some(pruning) = pruning {
        let _ = pruning.await;
    }
    tracing::info!("tidings stopped");
    Ok(())
}

/// Serves `app` on `listener` until `stop`, then lets open requests finish.
async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    settings: &Settings,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let cap = settings.api_max_connections.max(1);
    let open = Arc::new(Semaphore::new(cap));
    let refusing = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.api_header_timeout);
    // When the last refusal was logged: one line per burst, not one per connection.
    let mut refusals_logged: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, usually: wait instead of spinning.
                    tracing::error!(error = %e, "accepting an API connection failed; retrying in 100ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics.connection_refused();
            if refusals_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                refusals_logged = Some(Instant::now());
                tracing::warn!(
                    max = cap,
                    %peer,
                    "TIDINGS_API_MAX_CONNECTIONS connections are open: answering new ones 503 and closing them"
                );
            }
            // Answering takes a descriptor for up to a second: under a flood, only so many
            // at once; the rest are closed unanswered.
            if let Ok(answering) = refusing.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(answering);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            tower::ServiceExt::oneshot(app.clone(), req)
        });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let stop = stop.clone();
        let metrics = metrics.clone();
        metrics.connection(true);
        tokio::spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "API connection ended with an error");
            }
            metrics.connection(false);
            drop(permit);
        });
    }
    // Every permit back: every connection has finished.
    let _ = open.acquire_many(cap as u32).await;
}

/// Connections over the cap answered at once; more are closed without an answer.
const REFUSALS_AT_ONCE: usize = 64;

/// Answers a connection over the cap 503 and closes it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = r#"{"error":{"code":"overloaded","message":"too many connections are open; try again shortly"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        api::error::RETRY_AFTER_SECS,
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
        // Closing with the request unread would reset the connection, and the client might
        // lose the answer: read what it sent until it closes (within the second).
        let mut sink = [0u8; 1024];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Applies migrations and exits (`tidings migrate`).
pub async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let store = store::open_with(&settings.database_url, &store_options(&settings)?).await?;
    tracing::info!(store = store.backend(), "migrations applied");
    println!("migrations applied to {}", redact(&settings.database_url));
    Ok(())
}

/// Copies the SQLite store to `path` (`tidings backup`), beside a running `serve`.
pub fn backup(settings: Settings, path: &std::path::Path) -> anyhow::Result<()> {
    let url = &settings.database_url;
    if !url.starts_with("sqlite:") {
        anyhow::bail!(
            "{} is a PostgreSQL database: back it up with pg_dump (or continuous archiving for \
             point-in-time recovery), as docs/operations.md describes; keep the key file with it",
            redact(url)
        );
    }
    let size = store::backup_sqlite(url, path)
        .with_context(|| format!("backing up {} to {}", redact(url), path.display()))?;
    println!(
        "backed up {} to {} ({size} bytes)",
        redact(url),
        path.display()
    );
    match &settings.secret_key {
        Some(_) => println!(
            "Keep TIDINGS_SECRET_KEY with this copy: without it the signing secrets in it cannot be unsealed."
        ),
        None => println!(
            "Keep the key file {} with this copy: without it the signing secrets in it cannot be unsealed.",
            settings.secret_key_file.display()
        ),
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

/// A database URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_connections_reach_the_store_and_none_is_refused() {
        let mut settings = Settings {
            database_connections: 3,
            ..Settings::default()
        };
        assert_eq!(store_options(&settings).unwrap().write_connections, 3);
        settings.database_connections = 0;
        let refused = store_options(&settings).unwrap_err().to_string();
        assert!(
            refused.contains("TIDINGS_DATABASE_CONNECTIONS"),
            "{refused}"
        );
    }
}
