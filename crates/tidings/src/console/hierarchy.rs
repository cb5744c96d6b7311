//! Hierarchy: the tree of levels with their endpoint health, and one level's page (webhook
//! URL, notification contact, signing secret). Reads and changes of a level go through the
//! API's handlers (`GET`/`PATCH /v1/{collection}/{id}`, `.../secret`, `.../secret/rotate`).

use std::collections::HashMap;

use axum::extract::{Form, Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};

use super::layout::{self, field_error, Section};
use super::tree::{self, Node, Tree};
use super::{FormError, Shared, Signed};
use crate::domain::{EntityId, Millis};
use crate::store::{Health, StoreError};

const DAY: i64 = 24 * 3_600_000;

pub fn store_error(e: StoreError) -> Response {
    tracing::error!(error = %e, "console: store failure");
    layout::error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "The store did not answer; see the server log.",
    )
}

pub async fn tree_page(State(c): State<Shared>, signed: Signed) -> Response {
    let store = c.app().hierarchy.store().as_ref();
    let now = c.app().hierarchy.now();
    let tree = match c.tree(&signed).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    // Kept up to date as attempts are recorded: one read for every level shown.
    let health = match store.endpoint_health(&tree.ids(), now).await {
        Ok(h) => h,
        Err(e) => return store_error(e),
    };
    let roots = tree.children(None);
    let body = html! {
        p.lead { "Each level's webhook URL, notification contact and endpoint health over the last 24 hours. Open a level to change them or to see its signing secret." }
        @if tree.truncated {
            p.notice { "Only the first " (tree::MAX_PER_KIND) " levels of each kind are shown." }
        }
        @if roots.is_empty() {
            p.empty { "No levels yet: create a reseller with the API (" code { "POST /v1/resellers" } "); it appears here." }
        } @else {
            ul.tree aria-label="Levels" {
                @for n in roots { (branch(&tree, n, &health)) }
            }
        }
    };
    layout::page(&signed, Section::Levels, "Hierarchy", body)
}

fn branch(tree: &Tree, n: &Node, health: &HashMap<EntityId, Health>) -> Markup {
    let kids = tree.children(Some(&n.id));
    html! {
        li {
            div.node {
                span.kind { (n.level.as_str()) }
                a.name href={ "/levels/" (tree::collection(n.level)) "/" (n.id) } { (n.name) }
                span.url {
                    @match &n.webhook_url {
                        Some(u) => code { (u) },
                        None => span.muted { "no webhook URL" },
                    }
                }
                @if let Some(c) = &n.contact {
                    span.muted title="Notification contact" { (c) }
                }
                (health_badge(health.get(&n.id), n.webhook_url.is_some()))
            }
            @if !kids.is_empty() {
                ul {
                    @for k in kids { (branch(tree, k, health)) }
                }
            }
        }
    }
}

fn health_badge(h: Option<&Health>, has_url: bool) -> Markup {
    let attempted =
        h.filter(|h| h.consecutive_failures > 0 || h.successes_24h + h.failures_24h > 0);
    html! {
        @match attempted {
            Some(h) if h.consecutive_failures > 0 => span.badge.failed title=(h.last_error.as_deref().unwrap_or("")) { "failing · " (h.consecutive_failures) " in a row" },
            Some(h) => span.badge.succeeded { "ok · " (ratio(h)) },
            None if has_url => span.badge.idle { "no attempts in 24 h" },
            None => {},
        }
    }
}

fn ratio(h: &Health) -> String {
    match h.success_ratio_24h() {
        None => "–".into(),
        Some(r) => format!("{:.0} %", r * 100.0),
    }
}

/// What the level page shows besides the level itself.
#[derive(Default)]
struct Extra {
    error: Option<FormError>,
    /// The values typed, shown again with their error.
    url_input: Option<String>,
    contact_input: Option<String>,
    secret: Option<(String, bool)>,
    notice: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct LevelQuery {
    saved: Option<String>,
}

pub async fn level_page(
    State(c): State<Shared>,
    signed: Signed,
    Path((collection, id)): Path<(String, String)>,
    Query(q): Query<LevelQuery>,
) -> Response {
    let notice = match q.saved.as_deref() {
        Some("url") => Some("Webhook URL saved.".to_owned()),
        Some("contact") => Some("Notification contact saved.".to_owned()),
        _ => None,
    };
    level(
        &c,
        &signed,
        &collection,
        &id,
        StatusCode::OK,
        Extra {
            notice,
            ..Extra::default()
        },
    )
    .await
}

async fn level(
    c: &Shared,
    signed: &Signed,
    collection: &str,
    id: &str,
    status: StatusCode,
    extra: Extra,
) -> Response {
    let Some(level) = tree::level_of_collection(collection) else {
        return layout::error_page(StatusCode::NOT_FOUND, "No such page.");
    };
    let v = match c
        .read(
            &signed.who,
            &format!("/v1/{collection}/{}", super::encode(id)),
        )
        .await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Ok(level_id) = EntityId::parse(id) else {
        return layout::error_page(StatusCode::NOT_FOUND, "No such level.");
    };
    let now = c.app().hierarchy.now();
    let health = match c
        .app()
        .hierarchy
        .store()
        .endpoint_health(std::slice::from_ref(&level_id), now)
        .await
    {
        Ok(mut h) => h
            .remove(&level_id)
            .filter(|h| h.consecutive_failures > 0 || h.successes_24h + h.failures_24h > 0),
        Err(e) => return store_error(e),
    };
    let name = v["name"].as_str().unwrap_or_default();
    let url = v["webhook_url"].as_str();
    let contact = v["notification_contact"]["email"].as_str();
    let parent_field = match level {
        crate::domain::Level::Dealer => Some("reseller"),
        crate::domain::Level::Company => Some("dealer"),
        crate::domain::Level::Site => Some("company"),
        crate::domain::Level::Reseller => None,
    };
    let parent = parent_field.and_then(|f| v[f]["name"].as_str().map(|n| (f, n)));
    let url_error = FormError::on(&extra.error, "webhook_url");
    let contact_error = extra
        .error
        .as_ref()
        .filter(|e| {
            e.field
                .as_deref()
                .is_some_and(|f| f.starts_with("notification_contact"))
        })
        .map(|e| e.message.clone());
    let other_error = extra
        .error
        .as_ref()
        .filter(|e| url_error.is_none() && contact_error.is_none() && !e.message.is_empty())
        .map(|e| e.message.clone());
    let base = format!("/levels/{collection}/{id}");
    let title = name.to_owned();
    let body = html! {
        p.lead {
            span.kind { (level.as_str()) } " "
            code { (id) }
            @if let Some((f, n)) = parent { " · part of " (f) " " strong { (n) } }
        }
        @if let Some(n) = &extra.notice { p.notice role="status" { (n) } }
        @if let Some(e) = &other_error { p.field-error role="alert" { (e) } }
        section.grid {
            (setting_panel(&URL_SETTING, signed, &base, extra.url_input.as_deref(), url, &url_error))
            (setting_panel(&CONTACT_SETTING, signed, &base, extra.contact_input.as_deref(), contact, &contact_error))
            div.panel {
                h2 { "Endpoint health, last 24 h" }
                @match &health {
                    None => p.empty { @if url.is_some() { "No attempts in the last 24 hours." } @else { "No webhook URL: set one to receive webhooks." } },
                    Some(h) => dl.facts {
                        dt { "Success ratio" } dd { (ratio(h)) " (" (h.successes_24h) " delivered, " (h.failures_24h) " failed)" }
                        dt { "Last success" } dd { (layout::opt_time(h.last_success_at)) }
                        dt { "Last failure" } dd { (layout::opt_time(h.last_failure_at)) }
                        @if let Some(e) = &h.last_error { dt { "Its error" } dd.error-text { (e) } }
                        dt { "Failures in a row" } dd { (h.consecutive_failures) }
                    },
                }
                p {
                    a href={ "/deliveries?level_id=" (id) } { "Deliveries to this level" } " · "
                    a href={ "/deliveries?level_id=" (id) "&status=failed" } { "failed ones" }
                }
            }
            div.panel {
                h2 { "Signing secret" }
                p.muted { "Receivers verify the " code { "webhook-signature" } " header with it." }
                @if let Some((secret, rotated)) = &extra.secret {
                    @if *rotated { p.notice role="status" { "Secret rotated. The previous one keeps signing too for 24 hours." } }
                    div.secret {
                        code #secret { (secret) }
                        button.copy type="button" data-copy="secret" { "Copy" }
                    }
                } @else {
                    form method="post" action={ (base) "/secret" } {
                        (layout::csrf(signed))
                        button.secondary type="submit" { "Reveal secret" }
                    }
                }
                form method="post" action={ (base) "/rotate" } {
                    (layout::csrf(signed))
                    div.check {
                        input #confirm-rotate type="checkbox" name="confirm" value="yes" required;
                        label for="confirm-rotate" { "Make a new secret; the current one stops signing in 24 hours" }
                    }
                    (field_error("confirm", &FormError::on(&extra.error, "confirm")))
                    button.danger type="submit" data-confirm="Rotate this level's signing secret?" { "Rotate secret" }
                }
            }
            div.panel {
                h2 { "Recover failed webhooks" }
                form method="post" action="/deliveries/recover" {
                    (layout::csrf(signed))
                    input type="hidden" name="level_id" value=(id);
                    label for="since" { "Failed webhooks created since (RFC 3339)" }
                    input #since type="text" name="since" value=(Millis(now.0 - DAY).to_rfc3339());
                    button type="submit" { "Queue them again" }
                }
            }
        }
    };
    let mut r = layout::page(signed, Section::Levels, &title, body);
    *r.status_mut() = status;
    r
}

/// One of a level's two settings, each changed by a form of its own on the level's page.
struct Setting {
    title: &'static str,
    /// The input's id and name (and the form field the settings handler reads).
    field: &'static str,
    label: &'static str,
    input_type: &'static str,
    placeholder: &'static str,
    /// The `action` values and texts of the buttons that save and clear it.
    save: (&'static str, &'static str),
    clear: (&'static str, &'static str),
    /// What happens without it.
    without: &'static str,
}

const URL_SETTING: Setting = Setting {
    title: "Webhook URL",
    field: "webhook_url",
    label: "URL that receives this level's webhooks",
    input_type: "url",
    placeholder: "https://example.com/hooks",
    save: ("save_url", "Save URL"),
    clear: ("clear_url", "Clear URL"),
    without: "Without a URL this level receives nothing; the levels below still do.",
};

const CONTACT_SETTING: Setting = Setting {
    title: "Notification contact",
    field: "contact",
    label: "E-mail address told about failed webhooks",
    input_type: "email",
    placeholder: "ops@example.com",
    save: ("save_contact", "Save contact"),
    clear: ("clear_contact", "Clear contact"),
    without: "Without one, the nearest level above with a contact is told.",
};

/// The panel of one setting: the value typed (shown again with its error) or else the one
/// set, a button to save it and, while one is set, one to clear it.
fn setting_panel(
    s: &Setting,
    signed: &Signed,
    base: &str,
    typed: Option<&str>,
    set: Option<&str>,
    error: &Option<String>,
) -> Markup {
    html! {
        div.panel {
            h2 { (s.title) }
            form method="post" action={ (base) "/settings" } {
                (layout::csrf(signed))
                label for=(s.field) { (s.label) }
                input id=(s.field) type=(s.input_type) name=(s.field) placeholder=(s.placeholder)
                    value=(typed.or(set).unwrap_or(""))
                    aria-invalid=[error.as_ref().map(|_| "true")]
                    aria-describedby=[error.as_ref().map(|_| format!("{}-error", s.field))];
                (field_error(s.field, error))
                div.actions {
                    button type="submit" name="action" value=(s.save.0) { (s.save.1) }
                    @if set.is_some() {
                        button.secondary type="submit" name="action" value=(s.clear.0) { (s.clear.1) }
                    }
                }
            }
            p.muted { (s.without) }
        }
    }
}

#[derive(Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    webhook_url: Option<String>,
    contact: Option<String>,
}

pub async fn settings(
    State(c): State<Shared>,
    signed: Signed,
    Path((collection, id)): Path<(String, String)>,
    Form(form): Form<SettingsForm>,
) -> Response {
    if let Some(r) = signed.refuse(&form.csrf) {
        return r;
    }
    let text = |v: &Option<String>| v.as_deref().map(str::trim).unwrap_or("").to_owned();
    let (patch, saved) = match form.action.as_str() {
        "save_url" => {
            let u = text(&form.webhook_url);
            (
                json!({ "webhook_url": if u.is_empty() { Value::Null } else { Value::String(u) } }),
                "url",
            )
        }
        "clear_url" => (json!({ "webhook_url": null }), "url"),
        "save_contact" => {
            let e = text(&form.contact);
            (
                json!({ "notification_contact": if e.is_empty() { Value::Null } else { json!({ "email": e }) } }),
                "contact",
            )
        }
        "clear_contact" => (json!({ "notification_contact": null }), "contact"),
        _ => {
            return layout::error_page(StatusCode::BAD_REQUEST, "Unknown action.");
        }
    };
    let answer = c
        .api(
            &signed.who,
            Method::PATCH,
            &format!("/v1/{collection}/{}", super::encode(&id)),
            Some(&patch),
        )
        .await;
    if answer.ok() {
        return Redirect::to(&format!("/levels/{collection}/{id}?saved={saved}")).into_response();
    }
    if answer.status == StatusCode::NOT_FOUND {
        return layout::error_page(answer.status, &answer.message());
    }
    let extra = Extra {
        error: answer.error(),
        url_input: form.webhook_url.clone().filter(|_| saved == "url"),
        contact_input: form.contact.clone().filter(|_| saved == "contact"),
        ..Extra::default()
    };
    level(&c, &signed, &collection, &id, answer.status, extra).await
}

#[derive(Deserialize)]
pub struct SecretForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

pub async fn reveal(
    State(c): State<Shared>,
    signed: Signed,
    Path((collection, id)): Path<(String, String)>,
    Form(form): Form<SecretForm>,
) -> Response {
    if let Some(r) = signed.refuse(&form.csrf) {
        return r;
    }
    secret(&c, &signed, &collection, &id, false).await
}

pub async fn rotate(
    State(c): State<Shared>,
    signed: Signed,
    Path((collection, id)): Path<(String, String)>,
    Form(form): Form<SecretForm>,
) -> Response {
    if let Some(r) = signed.refuse(&form.csrf) {
        return r;
    }
    if form.confirm != "yes" {
        let extra = Extra {
            error: Some(FormError {
                field: Some("confirm".into()),
                message: "Tick the box to confirm the rotation.".into(),
            }),
            ..Extra::default()
        };
        return level(
            &c,
            &signed,
            &collection,
            &id,
            StatusCode::UNPROCESSABLE_ENTITY,
            extra,
        )
        .await;
    }
    secret(&c, &signed, &collection, &id, true).await
}

async fn secret(c: &Shared, signed: &Signed, collection: &str, id: &str, rotate: bool) -> Response {
    let (method, path) = if rotate {
        (
            Method::POST,
            format!("/v1/{collection}/{}/secret/rotate", super::encode(id)),
        )
    } else {
        (
            Method::GET,
            format!("/v1/{collection}/{}/secret", super::encode(id)),
        )
    };
    let answer = c.api(&signed.who, method, &path, None).await;
    if !answer.ok() {
        return layout::error_page(answer.status, &answer.message());
    }
    let secret = answer.body["secret"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let extra = Extra {
        secret: Some((secret, rotate)),
        ..Extra::default()
    };
    level(c, signed, collection, id, StatusCode::OK, extra).await
}
