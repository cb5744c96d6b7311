//! Deliveries: the webhooks, newest first, with the API's filters and live updates; one
//! webhook with its payload and attempts; retry and recover through the API's handlers.

use std::collections::HashMap;

use axum::extract::{Form, Path, Query, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

use super::hierarchy::store_error;
use super::layout::{self, field_error, Section};
use super::session::CsrfOnly;
use super::tree::{self, Tree};
use super::{api_time, FormError, Shared, Signed};
use crate::api::webhooks::ListQuery;
use crate::domain::{EntityId, EventType};
use crate::store::{LastAttempt, Webhook, WebhookFilter, WebhookStatus};

/// Webhooks per page.
const PAGE: u32 = 50;

/// How many failed webhooks a recovery just queued again (the page it redirects to says so).
#[derive(Debug, Deserialize, Default)]
pub struct Recovered {
    recovered: Option<u64>,
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The API's list query as the console's filter form sends it: a blank field means "any",
/// and pages are the console's size.
fn from_form(q: &ListQuery) -> ListQuery {
    let g = |v: &Option<String>| given(v).map(str::to_owned);
    ListQuery {
        status: g(&q.status),
        event_type: g(&q.event_type),
        level_id: g(&q.level_id),
        subject_id: g(&q.subject_id),
        since: g(&q.since),
        until: g(&q.until),
        after: g(&q.after),
        limit: Some(PAGE),
    }
}

/// The store filter, or the error naming the field: the API's own parsing.
fn parse(q: &ListQuery) -> Result<WebhookFilter, FormError> {
    from_form(q).filter().map_err(|e| FormError {
        field: e.field,
        message: e.message,
    })
}

/// The query string of these filters, without the cursor.
fn query_string(q: &ListQuery) -> String {
    let mut parts = Vec::new();
    for (name, v) in [
        ("status", &q.status),
        ("type", &q.event_type),
        ("level_id", &q.level_id),
        ("subject_id", &q.subject_id),
        ("since", &q.since),
        ("until", &q.until),
    ] {
        if let Some(v) = given(v) {
            parts.push(format!("{name}={}", super::encode(v)));
        }
    }
    parts.join("&")
}

/// The rows shown: each webhook with how its latest attempt ended.
type Rows = Vec<(Webhook, Option<LastAttempt>)>;

async fn load(
    c: &Shared,
    signed: &Signed,
    f: &WebhookFilter,
) -> Result<(Tree, Rows), crate::store::StoreError> {
    let store = c.app().hierarchy.store().as_ref();
    let tree = Tree::load(store, &signed.who).await?;
    let scope = tree.scope(&signed.who);
    let rows = store.webhooks_newest(f, scope.as_deref()).await?;
    let tried: Vec<EntityId> = rows
        .iter()
        .filter(|w| w.attempts > 0)
        .map(|w| w.id.clone())
        .collect();
    let mut last: HashMap<EntityId, LastAttempt> = store
        .last_attempts(&tried)
        .await?
        .into_iter()
        .map(|a| (a.webhook_id.clone(), a))
        .collect();
    let rows = rows
        .into_iter()
        .map(|w| {
            let a = last.remove(&w.id);
            (w, a)
        })
        .collect();
    Ok((tree, rows))
}

pub async fn list_page(
    State(c): State<Shared>,
    signed: Signed,
    Query(q): Query<ListQuery>,
    Query(recovered): Query<Recovered>,
) -> Response {
    let parsed = parse(&q);
    let filter = parsed.clone().unwrap_or(WebhookFilter {
        limit: PAGE,
        ..WebhookFilter::default()
    });
    let (tree, rows) = match &parsed {
        Ok(f) => match load(&c, &signed, f).await {
            Ok(x) => x,
            Err(e) => return store_error(e),
        },
        Err(_) => match c.tree(&signed).await {
            Ok(t) => (t, Vec::new()),
            Err(r) => return r,
        },
    };
    let error = parsed.err();
    let on = |f: &str| FormError::on(&error, f);
    let query = query_string(&q);
    let live = filter.after.is_none() && error.is_none();
    let older = (rows.len() as u32 == PAGE)
        .then(|| rows.last().map(|(w, _)| w.id.clone()))
        .flatten();
    let select = |v: &Option<String>, option: &str| given(v) == Some(option);
    let types = EventType::ALL.map(EventType::as_str);
    let body = html! {
        @if let Some(n) = recovered.recovered {
            p.notice role="status" { (n) " failed webhook(s) queued again." }
        }
        form.filters method="get" action="/deliveries" {
            div {
                label for="f-status" { "Status" }
                (layout::filter_select("f-status", "status", &["pending", "succeeded", "failed"], given(&q.status)))
                (field_error("f-status", &on("status")))
            }
            div {
                label for="f-type" { "Type" }
                (layout::filter_select("f-type", "type", &types, given(&q.event_type)))
                (field_error("f-type", &on("type")))
            }
            div {
                label for="f-level" { "Level" }
                select #f-level name="level_id" {
                    option value="" { "any" }
                    @for n in tree.nodes.iter().take(2000) {
                        option value=(n.id) selected[select(&q.level_id, n.id.as_str())] { (n.level.as_str()) ": " (n.name) }
                    }
                }
                (field_error("f-level", &on("level_id")))
            }
            div {
                label for="f-subject" { "Subject id" }
                input #f-subject type="text" name="subject_id" value=(given(&q.subject_id).unwrap_or("")) placeholder="entity id";
                (field_error("f-subject", &on("subject_id")))
            }
            div {
                label for="f-since" { "Created since" }
                input #f-since type="text" name="since" value=(given(&q.since).unwrap_or("")) placeholder="2026-01-31T00:00:00Z";
                (field_error("f-since", &on("since")))
            }
            div {
                label for="f-until" { "Created before" }
                input #f-until type="text" name="until" value=(given(&q.until).unwrap_or("")) placeholder="2026-02-01T00:00:00Z";
                (field_error("f-until", &on("until")))
            }
            div.actions {
                button type="submit" { "Filter" }
                a href="/deliveries" { "Clear" }
            }
        }
        @if live {
            p.muted #live-note aria-live="polite" { "Updates live: new webhooks and attempts appear as they happen." }
        }
        @if rows.is_empty() && filter.after.is_none() && error.is_none() && query.is_empty() {
            p.empty { "No webhooks yet: set a webhook URL on a level (" a href="/levels" { "Hierarchy" } "); every change below it then sends one." }
        }
        table.deliveries {
            thead { tr { th { "Created" } th { "Status" } th { "Type" } th { "To" } th { "Attempts" } th { "Next attempt" } th { "Webhook" } } }
            tbody #rows data-live=[live.then(|| format!("/deliveries/rows?{query}"))] {
                (table_rows(&rows, &tree))
            }
        }
        @if rows.is_empty() && !(filter.after.is_none() && query.is_empty()) && error.is_none() {
            p.empty { "No webhook matches these filters." }
        }
        nav.pager aria-label="Pages" {
            @if filter.after.is_some() { a href={ "/deliveries?" (query) } { "← Newest" } }
            @if let Some(id) = older { a href={ "/deliveries?" (query) (if query.is_empty() { "" } else { "&" }) "after=" (id) } { "Older →" } }
        }
    };
    let mut r = layout::page(&signed, Section::Deliveries, "Deliveries", body);
    if error.is_some() {
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    r
}

fn table_rows(rows: &Rows, tree: &Tree) -> Markup {
    html! {
        @for (w, last) in rows {
            tr {
                td data-label="Created" { (layout::time(w.created_at)) }
                td data-label="Status" {
                    (layout::status_badge(w.status.as_str()))
                    @if let Some(e) = last.as_ref().and_then(|a| a.error.as_deref()) {
                        br; span.error-text.clip title=(e) { (e) }
                    }
                }
                td data-label="Type" { a href={ "/deliveries/" (w.id) } { code { (w.event_type.as_str()) } } }
                td data-label="To" {
                    @match tree.get(&w.level_id) {
                        Some(n) => { (n.name) " " span.muted { (w.level.as_str()) } },
                        None => { span.muted { (w.level.as_str()) " " (w.level_id) } },
                    }
                    br; span.url.muted { (w.url) }
                }
                td data-label="Attempts" { (w.attempts) }
                td data-label="Next attempt" {
                    @match w.due_at.filter(|_| w.status == WebhookStatus::Pending) {
                        Some(t) => (layout::time(t)),
                        None => span.muted { "–" },
                    }
                }
                td data-label="Webhook" { a.id href={ "/deliveries/" (w.id) } { code { (w.id) } } }
            }
        }
    }
}

/// The first page's rows alone, for the page's script to refresh the table.
pub async fn rows(State(c): State<Shared>, signed: Signed, RawQuery(raw): RawQuery) -> Response {
    let q = first_page_query(&raw.unwrap_or_default());
    let Ok(f) = parse(&q) else {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    };
    match load(&c, &signed, &f).await {
        Ok((tree, rows)) => Html(table_rows(&rows, &tree).into_string()).into_response(),
        Err(e) => store_error(e),
    }
}

/// The filters of a query string, without its cursor: the rows of the first page.
fn first_page_query(raw: &str) -> ListQuery {
    let mut f = ListQuery::default();
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        let v = Some(v.into_owned());
        match k.as_ref() {
            "status" => f.status = v,
            "type" => f.event_type = v,
            "level_id" => f.level_id = v,
            "subject_id" => f.subject_id = v,
            "since" => f.since = v,
            "until" => f.until = v,
            _ => {}
        }
    }
    f
}

#[derive(Deserialize, Default)]
pub struct OneQuery {
    retried: Option<String>,
}

pub async fn one_page(
    State(c): State<Shared>,
    signed: Signed,
    Path(id): Path<String>,
    Query(q): Query<OneQuery>,
) -> Response {
    let notice = q
        .retried
        .is_some()
        .then(|| "Queued for an attempt now.".to_owned());
    one(&c, &signed, &id, notice, None).await
}

async fn one(
    c: &Shared,
    signed: &Signed,
    id: &str,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    let w = match c
        .read(&signed.who, &format!("/v1/webhooks/{}", super::encode(id)))
        .await
    {
        Ok(w) => w,
        Err(r) => return r,
    };
    let status = w["status"].as_str().unwrap_or("");
    let level = w["level"]["type"].as_str().unwrap_or("");
    let level_id = w["level"]["id"].as_str().unwrap_or("");
    let payload = serde_json::to_string_pretty(&w["payload"]).unwrap_or_default();
    let empty = Vec::new();
    let attempts = w["attempts"].as_array().unwrap_or(&empty);
    let collection = level.parse().ok().map(tree::collection);
    // The receiving level's name, as the API shows it to this key.
    let level_name = match collection {
        Some(col) => {
            let l = c
                .api(
                    &signed.who,
                    Method::GET,
                    &format!("/v1/{col}/{}", super::encode(level_id)),
                    None,
                )
                .await;
            l.body["name"].as_str().map(str::to_owned)
        }
        None => None,
    };
    let body = html! {
        @if let Some(n) = &notice { p.notice role="status" { (n) } }
        @if let Some(e) = &error { p.field-error role="alert" { (e) } }
        dl.facts {
            dt { "Status" } dd { (layout::status_badge(status)) }
            dt { "Type" } dd { code { (w["type"].as_str().unwrap_or("")) } }
            dt { "To" } dd {
                @match collection {
                    Some(col) => a href={ "/levels/" (col) "/" (level_id) } { (level_name.as_deref().unwrap_or(level_id)) },
                    None => code { (level_id) },
                }
                " " span.muted { (level) }
            }
            dt { "URL (as when created)" } dd { code.url { (w["url"].as_str().unwrap_or("")) } }
            dt { "Subject" } dd { code { (w["subject_id"].as_str().unwrap_or("")) } }
            dt { "Created" } dd { @if let Some(t) = api_time(&w["created"]) { (layout::time(t)) } }
            dt { "Attempts" } dd { (w["attempt_count"]) }
            @if let Some(t) = api_time(&w["next_attempt_at"]) { dt { "Next attempt" } dd { (layout::time(t)) } }
        }
        form method="post" action={ "/deliveries/" (id) "/retry" } {
            (layout::csrf(signed))
            button type="submit" { "Retry now" }
            span.muted { " Queues one more attempt now" @if status == "failed" { " (it failed for good)" } "." }
        }
        h2 { "Attempts" }
        @if attempts.is_empty() {
            p.empty { "No attempt yet." }
        } @else {
            table.attempts {
                thead { tr { th { "#" } th { "Started" } th { "Result" } th { "Duration" } th { "Response (first 1 KiB)" } } }
                tbody {
                    @for a in attempts {
                        tr {
                            td data-label="#" { (a["number"]) }
                            td data-label="Started" { @if let Some(t) = api_time(&a["started_at"]) { (layout::time(t)) } }
                            td data-label="Result" {
                                @let code = a["status_code"].as_u64();
                                @match (a["error"].as_str(), code) {
                                    (None, Some(c)) => span.badge.succeeded { "HTTP " (c) },
                                    (Some(e), Some(c)) => { span.badge.failed { "HTTP " (c) } " " span.error-text { (e) } },
                                    (Some(e), None) => { span.badge.failed { "no answer" } " " span.error-text { (e) } },
                                    (None, None) => span.badge.succeeded { "ok" },
                                }
                            }
                            td data-label="Duration" { (a["duration_ms"]) " ms" }
                            td data-label="Response" { pre.excerpt { (a["body"].as_str().unwrap_or("")) } }
                        }
                    }
                }
            }
        }
        h2 { "Payload" }
        p.muted { "As sent with the next (or the last) attempt." }
        pre.payload { (payload) }
    };
    let title = format!("Webhook {id}");
    layout::page(signed, Section::Deliveries, &title, body)
}

pub async fn retry(
    State(c): State<Shared>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    let uri = format!("/v1/webhooks/{}/retry", super::encode(&id));
    let answer = match c.act(&signed, &form.csrf, Method::POST, &uri).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    if answer.ok() {
        return Redirect::to(&format!("/deliveries/{id}?retried=1")).into_response();
    }
    if answer.status == StatusCode::NOT_FOUND {
        return layout::error_page(answer.status, &answer.message());
    }
    let mut r = one(&c, &signed, &id, None, Some(answer.message())).await;
    *r.status_mut() = answer.status;
    r
}

#[derive(Deserialize)]
pub struct RecoverForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    level_id: String,
    #[serde(default)]
    since: String,
}

pub async fn recover(
    State(c): State<Shared>,
    signed: Signed,
    Form(form): Form<RecoverForm>,
) -> Response {
    if let Some(r) = signed.refuse(&form.csrf) {
        return r;
    }
    let body = json!({ "level_id": form.level_id.trim(), "since": form.since.trim() });
    let answer = c
        .api(
            &signed.who,
            Method::POST,
            "/v1/webhooks/recover",
            Some(&body),
        )
        .await;
    if !answer.ok() {
        let message = match answer.field() {
            Some(f) => format!("{} ({f})", answer.message()),
            None => answer.message(),
        };
        return layout::error_page(answer.status, &message);
    }
    let n = answer.body["recovered"].as_u64().unwrap_or(0);
    Redirect::to(&format!(
        "/deliveries?level_id={}&status=pending&recovered={n}",
        super::encode(form.level_id.trim())
    ))
    .into_response()
}
