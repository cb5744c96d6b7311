//! Wires the parts together: store, hierarchy, API, and (later) the dispatcher and mailer.
//! Shutdown is explicit: on SIGINT/SIGTERM the listener stops taking requests and in-flight
//! ones finish; anything not yet delivered stays in the store for the next start.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::api::{self, AppState};
use crate::changes::{Hierarchy, HierarchyRules};
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::domain::validate::UrlRules;
use crate::metrics::Metrics;
use crate::store;

/// Opens the store (creating and migrating it) and returns the application state.
pub async fn build(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<AppState> {
    let store = store::open(&settings.database_url)
        .await
        .with_context(|| format!("opening the store at {}", redact(&settings.database_url)))?;
    let rules = HierarchyRules {
        url_rules: UrlRules {
            allow_http: settings.allow_http,
        },
        meeting_base_url: settings.meeting_base_url.clone(),
    };
    let hierarchy = Arc::new(Hierarchy::new(store, clock, rules, Arc::new(Notify::new())));
    Ok(AppState {
        hierarchy,
        metrics: Arc::new(Metrics::new()),
    })
}

/// Runs `tidings serve` until a shutdown signal.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let state = build(&settings, Arc::new(SystemClock)).await?;
    if settings.allow_http {
        tracing::warn!(
            "TIDINGS_ALLOW_HTTP is on: http:// webhook URLs are accepted (development only)"
        );
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
    // A line on stdout that scripts and tests can wait for.
    println!("tidings listening on http://{addr}");
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
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
