//! Which store a test runs on, and the stores the store tests open directly: a temporary
//! SQLite file and a fresh PostgreSQL database. PostgreSQL is required: a missing server
//! fails the test, never skips.

use std::sync::Arc;

use sqlx::Connection;
use tidings::domain::entities::{Dealer, Entity, Reseller};
use tidings::domain::{EntityId, EventType, Level, Millis};
use tidings::store::{Attempt, NewEvent, NewWebhook, Next, Recorded, SqlStore, Store};

/// The PostgreSQL server the tests use (a database is created per test).
pub fn postgres_admin_url() -> String {
    std::env::var("TIDINGS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh, empty PostgreSQL database; returns its URL.
pub async fn fresh_postgres_database() -> String {
    let admin = postgres_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is required for the store tests at {admin} (set TIDINGS_TEST_POSTGRES_URL): {e}")
    });
    // The name starts with the creation time (the id's first 12 hex digits are milliseconds),
    // so leftovers of runs more than an hour old can be dropped without touching live ones.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let old: Vec<(String,)> =
        sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE 'tidings_test_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    for (db,) in old {
        let created = i64::from_str_radix(
            db.trim_start_matches("tidings_test_")
                .get(..12)
                .unwrap_or(""),
            16,
        )
        .unwrap_or(now);
        if now - created > 3_600_000 {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db}"))
                .execute(&mut conn)
                .await;
        }
    }
    let name = format!(
        "tidings_test_{}",
        tidings::domain::EntityId::generate(tidings::domain::Millis(now))
    );
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let mut url = url::Url::parse(&admin).expect("admin URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A store of each backend, with something to keep alive (the temp dir) while it is used.
pub struct TestStore {
    pub name: &'static str,
    pub url: String,
    pub store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = Arc::new(SqlStore::open(&url).await.expect("open sqlite"));
    TestStore {
        name: "sqlite",
        url,
        store,
        _dir: Some(dir),
    }
}

pub async fn postgres() -> TestStore {
    let url = fresh_postgres_database().await;
    let store = Arc::new(SqlStore::open(&url).await.expect("open postgres"));
    TestStore {
        name: "postgres",
        url,
        store,
        _dir: None,
    }
}

pub async fn both() -> Vec<TestStore> {
    vec![sqlite().await, postgres().await]
}

/// Which store the integration tests run on: `TIDINGS_TEST_STORE=postgres` for PostgreSQL,
/// SQLite otherwise. `scripts/test` runs the suite once with each.
pub fn postgres_selected() -> bool {
    std::env::var("TIDINGS_TEST_STORE").is_ok_and(|s| s == "postgres")
}

/// The database URL for a test whose files live in `dir`: a SQLite file there, or (when
/// PostgreSQL is selected) a fresh PostgreSQL database. The choice is remembered in `dir`, so
/// a server restarted on the same directory finds the same database. Callable from sync and
/// async code alike.
pub fn database_url_in(dir: &std::path::Path) -> String {
    let remembered = dir.join("database_url");
    if let Ok(url) = std::fs::read_to_string(&remembered) {
        return url;
    }
    let url = if postgres_selected() {
        fresh_postgres_database_blocking()
    } else {
        sqlite_url_in(dir)
    };
    std::fs::write(&remembered, &url).expect("remember the database URL");
    url
}

/// The URL of the SQLite file `tidings.db` in `dir`.
pub fn sqlite_url_in(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("tidings.db").display())
}

/// [`fresh_postgres_database`], callable from sync and async code alike (on a thread of its
/// own, with a runtime of its own).
pub fn fresh_postgres_database_blocking() -> String {
    std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(fresh_postgres_database())
    })
    .join()
    .expect("creating a PostgreSQL test database")
}

/// The time the store tests write at.
pub const T0: tidings::domain::Millis = tidings::domain::Millis(1_700_000_000_000);

/// A fresh id made at [`T0`].
pub fn id() -> tidings::domain::EntityId {
    tidings::domain::EntityId::generate(T0)
}

/// A contact with only the required fields.
pub fn contact() -> tidings::domain::entities::Contact {
    tidings::domain::entities::Contact {
        id: id(),
        first_name: "F".into(),
        last_name: "L".into(),
        email: "f@example.com".into(),
        phone: None,
        language: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Records for the store tests, written straight to a store

/// A reseller (its webhooks to `url`, if given).
pub fn reseller(url: Option<&str>) -> Entity {
    Entity::Reseller(Reseller {
        id: id(),
        name: "Reseller 1".into(),
        contact: contact(),
        notification_contact: None,
        webhook_url: url.map(str::to_owned),
        suspended: false,
    })
}

/// A dealer of `reseller`, without a webhook URL.
pub fn dealer(reseller: &EntityId) -> Entity {
    Entity::Dealer(Dealer {
        id: id(),
        name: "Dealer 1".into(),
        contact: contact(),
        reseller: reseller.clone(),
        notification_contact: None,
        webhook_url: None,
        suspended: false,
    })
}

/// An event of `event_type` about `subject_id` with `data`, made at `at`.
pub fn new_event(event_type: EventType, subject_id: &EntityId, data: &str, at: Millis) -> NewEvent {
    NewEvent {
        id: EntityId::generate(at),
        event_type,
        subject_id: subject_id.clone(),
        data: data.to_owned(),
        created_at: at,
    }
}

/// A webhook made at `at` to `level_id`, a `level`, at `url`; neither ordered nor held.
pub fn new_webhook(level: Level, level_id: &EntityId, url: &str, at: Millis) -> NewWebhook {
    NewWebhook {
        id: EntityId::generate(at),
        level,
        level_id: level_id.clone(),
        url: url.to_owned(),
        ordered: false,
        disabled: false,
    }
}

/// Commits a reseller, and `n` DEALER_CREATED events at `at`, each with one webhook to it;
/// answers the reseller's id and the webhooks' ids.
pub async fn queue(store: &dyn Store, n: usize, at: Millis) -> (EntityId, Vec<EntityId>) {
    let url = "https://r.example/hook";
    let r = reseller(Some(url));
    let mut tx = store.write_alone().await.unwrap();
    tx.put(&r, at).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        let d = dealer(r.id());
        tx.put(&d, at).await.unwrap();
        let data = format!("{{\"id\":\"{}\"}}", d.id());
        let event = new_event(EventType::DealerCreated, d.id(), &data, at);
        let w = new_webhook(Level::Reseller, r.id(), url, at);
        ids.push(w.id.clone());
        tx.add_event(&event, &[w], None).await.unwrap();
    }
    tx.commit().await.unwrap();
    (r.id().clone(), ids)
}

/// An attempt started at `at` that the receiver answered with `status` (an error unless 200).
pub fn attempt(number: u32, at: Millis, status: u16) -> Attempt {
    Attempt {
        number,
        started_at: at,
        duration_ms: 1,
        status_code: Some(status),
        error: (status != 200).then(|| format!("HTTP {status}")),
        body: String::new(),
    }
}

/// `attempt` of webhook `id` recorded, with what follows for the webhook.
pub fn recorded(id: &EntityId, attempt: Attempt, next: Next) -> Recorded {
    Recorded {
        webhook_id: id.clone(),
        attempt,
        next,
    }
}
