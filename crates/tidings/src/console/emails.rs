//! Failure e-mails: status, recipient and the webhooks each covers, from the API's list.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::Method;
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::hierarchy::store_error;
use super::layout::{self, Section};
use super::tree::{self, Tree};
use super::{Shared, Signed};
use crate::domain::{EntityId, Millis};

#[derive(Deserialize, Default)]
pub struct EmailQuery {
    after: Option<String>,
    status: Option<String>,
}

fn millis(v: &serde_json::Value) -> Option<Millis> {
    v.as_str().and_then(|s| Millis::parse_rfc3339(s).ok())
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
    let answer = c.api(&signed.who, Method::GET, &uri, None).await;
    if !answer.ok() {
        return layout::error_page(answer.status, &answer.message());
    }
    let tree = match Tree::load(c.app().hierarchy.store().as_ref(), &signed.who).await {
        Ok(t) => t,
        Err(e) => return store_error(e),
    };
    let names: HashMap<&EntityId, &tree::Node> = tree.nodes.iter().map(|n| (&n.id, n)).collect();
    let empty = Vec::new();
    let data = answer.body["data"].as_array().unwrap_or(&empty);
    let next = answer.body["next_cursor"].as_str();
    let status = q.status.as_deref().unwrap_or("");
    let body = html! {
        p.lead { "When a webhook fails its last attempt, its level's notification contact (or the nearest one above) gets an e-mail; failures of one URL close together share one digest." }
        form.filters method="get" action="/emails" {
            div {
                label for="e-status" { "Status" }
                select #e-status name="status" {
                    option value="" { "any" }
                    @for s in ["queued", "sent", "no_recipient"] {
                        option value=(s) selected[status == s] { (s) }
                    }
                }
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
                            td { @if let Some(t) = millis(&e["created"]) { (layout::time(t)) } }
                            td {
                                (layout::status_badge(e["status"].as_str().unwrap_or("")))
                                @if let Some(err) = e["last_error"].as_str() { br; span.error-text { (err) } }
                            }
                            td { @match e["recipient"].as_str() { Some(r) => (r), None => span.muted { "none" } } }
                            td {
                                @let lid = e["level_id"].as_str().unwrap_or("");
                                @match EntityId::parse(lid).ok().and_then(|id| names.get(&id).copied()) {
                                    Some(n) => a href={ "/levels/" (tree::collection(n.level)) "/" (n.id) } { (n.name) },
                                    None => code { (lid) },
                                }
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
                            td { @match millis(&e["sent_at"]) { Some(t) => (layout::time(t)), None => span.muted { "–" } } }
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
