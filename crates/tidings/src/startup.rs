//! Wires the parts together: store, hierarchy, API and dispatcher.
//!
//! Shutdown is explicit: on SIGINT/SIGTERM the listener stops taking requests, in-flight
//! requests finish, the dispatcher stops claiming and records the attempts in flight;
//! anything not yet delivered stays in the store for the next start.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tidings_egress::{AddressPolicy, Egress, EgressConfig};
use tokio::net::TcpListener;
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
use crate::store;

/// Everything `serve` runs, built but not started.
pub struct App {
    pub state: AppState,
    pub dispatcher: Dispatcher,
    /// Sends failure e-mails; run it like the dispatcher.
    pub mailer: Mailer,
}

/// Opens the store (creating and migrating it), the secret key and the outbound client.
pub async fn build(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
    let store = store::open(&settings.database_url)
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
    Ok(App {
        state: AppState {
            hierarchy,
            metrics,
            auth,
        },
        dispatcher,
        mailer,
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
        "tidings is listening"
    );
    let stop = CancellationToken::new();
    let dispatching = tokio::spawn(dispatcher.run(stop.clone()));
    let mailing = tokio::spawn(mailer.run(stop.clone()));
    // A line on stdout that scripts and tests can wait for.
    println!("tidings listening on http://{addr}");
    let signal_stop = stop.clone();
    let app = api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            signal_stop.cancel();
        })
        .await?;
    stop.cancel();
    let _ = dispatching.await;
    let _ = mailing.await;
    tracing::info!("tidings stopped");
    Ok(())
}

/// Applies migrations and exits (`tidings migrate`).
pub async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let store = store::open(&settings.database_url).await?;
    tracing::info!(store = store.backend(), "migrations applied");
    println!("migrations applied to {}", redact(&settings.database_url));
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
