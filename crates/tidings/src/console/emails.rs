//! Failure e-mails: status, recipient and the webhooks each covers, from the API's list.

use axum::extract::{Query, State};
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::layout::{self, Section};
use super::{api_time, Shared, Signed};

#[derive(Deserialize, Default)]
pub struct EmailQuery {
    after: Option<String>,
    status: Option<String>,
}

pub async fn page(
    State(c): State<Shared>,
    signed: Signed,
    Query(q): Query<EmailQuery>,
) -> Response {
    let mut uri = "/v1/emails?limit=100".to_owned();
    if let Some(a) = q.after.as_deref().filter(|a| !a.is_empty()) {
        uri.push_str(&format!("&after={}", super::encode(a)));
    }
    if let Some(s) = q.status.as_deref().filter(|s| !s.is_empty()) {
        uri.push_str(&format!("&status={}", super::encode(s)));
    }
    let (listed, tree) = match c.list_with_tree(&signed, &uri).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let empty = Vec::new();
    let data = listed["data"].as_array().unwrap_or(&empty);
    let next = listed["next_cursor"].as_str();
    let status = q.status.as_deref().unwrap_or("");
    let body = html! {
        p.lead { "When a webhook fails its last attempt, its level's notification contact (or the nearest one above) gets an e-mail; failures of one URL close together share one digest." }
        form.filters method="get" action="/emails" {
            div {
                label for="e-status" { "Status" }
                (layout::filter_select("e-status", "status", &["queued", "sent", "no_recipient"], Some(status)))
            }
            div.actions { button type="submit" { "Filter" } }
        }
        @if data.is_empty() {
            p.empty { "No failure e-mails: no webhook has failed its last attempt" @if !status.is_empty() { " with this status" } "." }
        } @else {
            table {
                thead { tr { th { "Created" } th { "Status" } th { "Recipient" } th { "Level and URL" } th { "Webhooks" } th { "Sent" } } }
                tbody {
                    @for e in data {
                        tr {
                            td { @if let Some(t) = api_time(&e["created"]) { (layout::time(t)) } }
                            td {
                                (layout::status_badge(e["status"].as_str().unwrap_or("")))
                                @if let Some(err) = e["last_error"].as_str() { br; span.error-text { (err) } }
                            }
                            td { @match e["recipient"].as_str() { Some(r) => (r), None => span.muted { "none" } } }
                            td {
                                (layout::level_link(&tree, e["level_id"].as_str().unwrap_or("")))
                                br; span.url.muted { (e["url"].as_str().unwrap_or("")) }
                            }
                            td {
                                ul.plain {
                                    @for w in e["webhook_ids"].as_array().unwrap_or(&empty) {
                                        @let w = w.as_str().unwrap_or("");
                                        li { a href={ "/deliveries/" (w) } { code { (w) } } }
                                    }
                                }
                            }
                            td { @match api_time(&e["sent_at"]) { Some(t) => (layout::time(t)), None => span.muted { "–" } } }
                        }
                    }
                }
            }
        }
        @if let Some(n) = next {
            nav.pager aria-label="Pages" { a href={ "/emails?after=" (n) "&status=" (status) } { "More →" } }
        }
    };
    layout::page(&signed, Section::Emails, "Failure e-mails", body)
}
