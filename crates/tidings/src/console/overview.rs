//! Overview: delivery attempts per minute and per hour, the success ratio, the queue, and
//! the levels failing now.

use axum::extract::State;
use axum::response::Response;
use maud::{html, Markup};

use super::layout::{self, Section};
use super::tree::{self, Tree};
use super::{Shared, Signed};
use crate::domain::Millis;
use crate::store::{Bucket, BucketWidth, QueueDepth};

const MINUTE: i64 = BucketWidth::Minute.millis();
const HOUR: i64 = BucketWidth::Hour.millis();
/// The queue is counted up to this many webhooks: counting a million pending ones takes
/// PostgreSQL most of a second, ten thousand a few milliseconds, and past this a figure says
/// no more at a glance than "over 10,000" (the `tidings_queue_depth` metric has them all).
const QUEUE_CAP: u64 = 10_000;

pub async fn page(State(c): State<Shared>, signed: Signed) -> Response {
    match render(&c, &signed).await {
        Ok(r) => r,
        Err(e) => super::hierarchy::store_error(e),
    }
}

async fn render(c: &Shared, signed: &Signed) -> Result<Response, crate::store::StoreError> {
    let store = c.app().hierarchy.store().as_ref();
    let now = c.app().hierarchy.now();
    let tree = Tree::load(store, &signed.who).await?;
    let scope = tree.scope(&signed.who);
    let hour_start = Millis((now.0 / MINUTE - 59) * MINUTE);
    let day_start = Millis((now.0 / HOUR - 23) * HOUR);
    let per_minute = store
        .attempt_buckets(scope.as_deref(), hour_start, BucketWidth::Minute)
        .await?;
    let per_hour = store
        .attempt_buckets(scope.as_deref(), day_start, BucketWidth::Hour)
        .await?;
    let queue = store.queue_depth(scope.as_deref(), now, QUEUE_CAP).await?;
    // Kept up to date as attempts are recorded: one read for every level in view.
    let health = store.endpoint_health(&tree.ids(), now).await?;
    let mut failing: Vec<_> = health
        .iter()
        .filter(|(_, h)| h.consecutive_failures > 0)
        .collect();
    failing.sort_by_key(|(_, h)| std::cmp::Reverse(h.last_failure_at));
    let (ok, bad) = per_hour
        .iter()
        .fold((0, 0), |(o, b), x| (o + x.succeeded, b + x.failed));
    let body = html! {
        @if tree.nodes.is_empty() {
            p.empty { "No levels yet: create a reseller with the API (" code { "POST /v1/resellers" } "), then set its webhook URL here." }
        }
        section.cards aria-label="At a glance" {
            div.card {
                h2 { "Success, last 24 h" }
                p.figure { (ratio(ok, bad)) }
                p.muted { (ok) " delivered · " (bad) " failed attempts" }
            }
            div.card {
                h2 { "Queue" }
                @if queue.more {
                    p.figure { "over " (thousands(queue.pending)) }
                    p.muted { "waiting for an attempt (counting stops there)" }
                } @else {
                    p.figure { (thousands(queue.pending)) }
                    p.muted { "waiting for an attempt" }
                }
            }
            div.card {
                h2 { "Oldest due" }
                (oldest(now, &queue))
            }
            div.card {
                h2 { "Failing now" }
                p.figure { (failing.len()) }
                p.muted { "levels whose last attempt failed" }
            }
        }
        section {
            h2 { "Last hour, per minute" }
            (chart(&per_minute, 60, hour_start, MINUTE, "minute"))
        }
        section {
            h2 { "Last 24 hours, per hour" }
            (chart(&per_hour, 24, day_start, HOUR, "hour"))
        }
        section {
            h2 { "Levels failing now" }
            @if failing.is_empty() {
                p.empty { "No level is failing: every endpoint's latest attempt in the last 24 h succeeded." }
            } @else {
                table {
                    thead { tr { th { "Level" } th { "Failures in a row" } th { "Last failure" } th { "Error" } th { "Last success" } } }
                    tbody {
                        @for (level_id, h) in &failing {
                            tr {
                                td {
                                    @match tree.get(level_id) {
                                        Some(n) => { a href={ "/levels/" (tree::collection(n.level)) "/" (n.id) } { (n.name) } " " span.muted { (n.level.as_str()) } },
                                        None => code { (level_id) },
                                    }
                                }
                                td { (h.consecutive_failures) }
                                td { (layout::opt_time(h.last_failure_at)) }
                                td.error-text { (h.last_error.as_deref().unwrap_or("")) }
                                td { (layout::opt_time(h.last_success_at)) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(signed, Section::Overview, "Overview", body))
}

fn ratio(ok: u64, bad: u64) -> String {
    if ok + bad == 0 {
        "–".into()
    } else {
        format!("{:.1} %", ok as f64 * 100.0 / (ok + bad) as f64)
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn oldest(now: Millis, q: &QueueDepth) -> Markup {
    html! {
        @match q.oldest_due {
            Some(t) => { p.figure { (layout::age(now, t)) } p.muted { "overdue since " (layout::time(t)) } },
            None => { p.figure { "–" } p.muted { "nothing overdue" } },
        }
    }
}

/// A bar chart of `n` buckets from `start`: delivered stacked under failed.
fn chart(buckets: &[Bucket], n: usize, start: Millis, width_ms: i64, unit: &str) -> Markup {
    let ago = match unit {
        "minute" => format!("{n} min"),
        _ => format!("{n} h"),
    };
    let mut values = vec![Bucket::default(); n];
    for b in buckets {
        if let Some(v) = usize::try_from(b.index)
            .ok()
            .and_then(|i| values.get_mut(i))
        {
            *v = *b;
        }
    }
    let max = values
        .iter()
        .map(|b| b.succeeded + b.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, h) = (600.0, 150.0);
    let bar = w / n as f64;
    let total: u64 = values.iter().map(|b| b.succeeded + b.failed).sum();
    let label = format!(
        "{} delivered and {} failed attempts, per {unit}; at most {max} in one {unit}",
        values.iter().map(|b| b.succeeded).sum::<u64>(),
        values.iter().map(|b| b.failed).sum::<u64>(),
    );
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (w) " " (h + 20.0) } role="img" aria-label=(label) preserveAspectRatio="none" {
                line.axis x1="0" y1=(h) x2=(w) y2=(h) {}
                @for (i, b) in values.iter().enumerate() {
                    @let x = i as f64 * bar;
                    @let ok_h = b.succeeded as f64 / max as f64 * h;
                    @let bad_h = b.failed as f64 / max as f64 * h;
                    @let at = Millis(start.0 + i as i64 * width_ms).to_rfc3339();
                    g {
                        title { (at) " UTC: " (b.succeeded) " delivered, " (b.failed) " failed" }
                        rect.hit x=(x) y="0" width=(bar) height=(h) {}
                        @if b.succeeded > 0 {
                            rect.ok x=(x + 1.0) y=(h - ok_h) width=(bar - 2.0) height=(ok_h) {}
                        }
                        @if b.failed > 0 {
                            rect.bad x=(x + 1.0) y=(h - ok_h - bad_h) width=(bar - 2.0) height=(bad_h) {}
                        }
                    }
                }
            }
            figcaption {
                span.key.ok { "delivered" } " " span.key.bad { "failed" }
                " · highest bar: " (max) " attempts"
                @if total == 0 { " · no attempts in this window" }
                span.ends { (ago) " ago … now" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn figures_are_grouped_by_thousands() {
        let shown: Vec<String> = [0, 999, 1_000, 100_000, 1_234_567]
            .into_iter()
            .map(thousands)
            .collect();
        assert_eq!(shown, ["0", "999", "1,000", "100,000", "1,234,567"]);
    }
}
