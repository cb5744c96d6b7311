//! A fixed workload on a SQLite store, for instruction counts and memory:
//!
//! ```sh
//! cargo build --release -p tidings --example store_workload
//! valgrind --tool=callgrind target/release/examples/store_workload 20000
//! /usr/bin/time -v target/release/examples/store_workload 20000
//! ```
//!
//! It builds the service's parts as `tidings serve` does (on a temporary SQLite file, with a
//! manual clock), creates a hierarchy of 2 resellers × 2 dealers × 2 companies × 4 sites with a
//! meeting on each site, then applies N meeting moments through [`Hierarchy`] (each writes an
//! event and one webhook per level above the meeting), and after every 16 of them claims the
//! due webhooks and records a successful attempt for each, as the dispatcher does. It prints
//! what it did and the database file's size at the end.

use std::sync::Arc;
use std::time::Duration;

use tidings::changes::{Hierarchy, Moment};
use tidings::clock::{Clock, ManualClock};
use tidings::config::Settings;
use tidings::domain::{Kind, Millis};
use tidings::store::{Attempt, Next, Recorded};
use tidings::tenancy::Principal;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const OWNER: &str = "workload";

fn main() -> anyhow::Result<()> {
    let changes: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 2_000,
    };
    // SQLite's allocator as `tidings serve` installs it; `WORKLOAD_SQLITE_ALLOCATOR=default`
    // leaves SQLite's own, for comparison.
    let allocator = std::env::var("WORKLOAD_SQLITE_ALLOCATOR").unwrap_or_default();
    if allocator != "default" {
        anyhow::ensure!(
            tidings_sqlite_alloc::install(),
            "SQLite's allocator did not go in"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(changes))
}

fn id(applied: &tidings::changes::Applied) -> String {
    applied.view["id"]
        .as_str()
        .expect("every entity's view has its id")
        .to_owned()
}

async fn run(changes: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("t.db");
    let settings = Settings {
        database_url: format!("sqlite://{}", db.display()),
        admin_key: Some("workload-operator-key".into()),
        secret_key: Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()),
        // No room for hand-offs: every webhook is written due and goes through a claim.
        max_in_flight: 1,
        ..Settings::default()
    };
    let clock = ManualClock::new(Millis(1_800_000_000_000));
    let app = tidings::startup::build(&settings, Arc::new(clock.clone())).await?;
    let hierarchy: &Hierarchy = &app.state.hierarchy;
    let op = Principal::Operator;
    let contact =
        serde_json::json!({"first_name": "Work", "last_name": "Load", "email": "w@example.com"});
    let mut meetings = Vec::new();
    let mut url = 0;
    let mut next_url = || {
        url += 1;
        format!("https://receiver{}.example.com/hooks/{url}", url % 10)
    };
    for r in 0..2 {
        let reseller = hierarchy
            .create(
                &op,
                Kind::Reseller,
                serde_json::json!({"name": format!("Reseller {r}"), "contact": contact, "webhook_url": next_url()}),
            )
            .await?;
        let rid = id(&reseller);
        for d in 0..2 {
            let dealer = hierarchy
                .create(
                    &op,
                    Kind::Dealer,
                    serde_json::json!({"name": format!("Dealer {r}.{d}"), "contact": contact, "reseller": {"id": rid}, "webhook_url": next_url()}),
                )
                .await?;
            let did = id(&dealer);
            for c in 0..2 {
                let company = hierarchy
                    .create(
                        &op,
                        Kind::Company,
                        serde_json::json!({"name": format!("Company {r}.{d}.{c}"), "contact": contact, "dealer": {"id": did}, "webhook_url": next_url()}),
                    )
                    .await?;
                let cid = id(&company);
                let user = hierarchy
                    .create(
                        &op,
                        Kind::User,
                        serde_json::json!({"first_name": "Work", "last_name": format!("User {r}.{d}.{c}"),
                                           "email": format!("user{r}.{d}.{c}@example.com"),
                                           "entity": {"type": "company", "id": cid}}),
                    )
                    .await?;
                let uid = id(&user);
                for s in 0..4 {
                    let site = hierarchy
                        .create(
                            &op,
                            Kind::Site,
                            serde_json::json!({"name": format!("Site {r}.{d}.{c}.{s}"), "company": {"id": cid}, "webhook_url": next_url()}),
                        )
                        .await?;
                    let sid = id(&site);
                    let meeting = hierarchy
                        .create(
                            &op,
                            Kind::Meeting,
                            serde_json::json!({"company": {"id": cid}, "site": {"id": sid}, "created_by": {"id": uid}, "subject": "workload"}),
                        )
                        .await?;
                    meetings.push(id(&meeting));
                }
            }
        }
    }

    let store = hierarchy.store();
    let moments = [Moment::Start, Moment::Wait, Moment::Takeover, Moment::End];
    let (mut webhooks, mut recorded) = (0, 0);
    for i in 0..changes {
        clock.advance(Duration::from_millis(1));
        let meeting = &meetings[i % meetings.len()];
        let moment = moments[(i / meetings.len()) % moments.len()];
        webhooks += hierarchy.moment(&op, meeting, moment).await?.webhooks;
        if i % 16 == 15 || i + 1 == changes {
            let now = clock.now();
            let claimed = store
                .claim_due(OWNER, now, Millis(now.0 + 35_000), 256)
                .await?;
            let results: Vec<Recorded> = claimed
                .iter()
                .map(|c| Recorded {
                    webhook_id: c.webhook.id.clone(),
                    attempt: Attempt {
                        number: 1,
                        started_at: now,
                        duration_ms: 3,
                        status_code: Some(200),
                        error: None,
                        body: "ok".into(),
                    },
                    next: Next::Succeeded,
                })
                .collect();
            recorded += store.record(OWNER, &results, now).await?.len();
        }
    }
    println!(
        "{changes} moments, {webhooks} webhooks written, {recorded} recorded; database {} KiB",
        std::fs::metadata(&db)?.len() / 1024
    );
    Ok(())
}
