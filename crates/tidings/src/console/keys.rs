//! API keys (the operator's): make a key scoped to a level, list, revoke; through the API's
//! handlers, which refuse every other key.

use axum::extract::{Form, Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use serde_json::json;

use super::layout::{self, field_error, Section};
use super::session::CsrfOnly;
use super::{api_time, FormError, Shared, Signed};

pub async fn page(State(c): State<Shared>, signed: Signed) -> Response {
    render(&c, &signed, None, None, StatusCode::OK).await
}

async fn render(
    c: &Shared,
    signed: &Signed,
    made: Option<String>,
    error: Option<FormError>,
    status: StatusCode,
) -> Response {
    let (listed, tree) = match c.list_with_tree(signed, "/v1/api-keys").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let empty = Vec::new();
    let keys = listed["data"].as_array().unwrap_or(&empty);
    let level_error = error
        .as_ref()
        .filter(|e| matches!(e.field.as_deref(), Some("id") | Some("level") | None))
        .map(|e| e.message.clone());
    let label_error = FormError::on(&error, "label");
    let body = html! {
        p.lead { "A key scoped to a level sees and changes that level and everything below it, in the API and in this console." }
        @if let Some(k) = &made {
            div.notice role="status" {
                p { strong { "The new key, shown this once:" } }
                div.secret {
                    code #new-key { (k) }
                    button.copy type="button" data-copy="new-key" { "Copy" }
                }
                p.muted { "Only its hash is stored; if it is lost, revoke it and make another." }
            }
        }
        section.panel {
            h2 { "Make a key" }
            @if tree.nodes.is_empty() {
                p.empty { "No levels yet: a key is scoped to a reseller, dealer, company or site; create one with the API first." }
            } @else {
                form method="post" action="/keys" {
                    (layout::csrf(signed))
                    label for="k-level" { "Level" }
                    select #k-level name="level" required aria-describedby=[level_error.as_ref().map(|_| "k-level-error")] {
                        @for n in &tree.nodes {
                            option value={ (n.level.as_str()) ":" (n.id) } { (n.level.as_str()) ": " (n.name) }
                        }
                    }
                    (field_error("k-level", &level_error))
                    label for="k-label" { "Label (optional)" }
                    input #k-label type="text" name="label" placeholder="who holds it";
                    (field_error("k-label", &label_error))
                    div.actions { button type="submit" { "Make key" } }
                }
            }
        }
        section {
            h2 { "Keys" }
            table {
                thead { tr { th { "Label" } th { "Scope" } th { "Created" } th { "State" } th { span.visually-hidden { "Actions" } } } }
                tbody {
                    @for k in keys {
                        @let id = k["id"].as_str().unwrap_or("");
                        @let revoked = api_time(&k["revoked"]);
                        tr {
                            td { (k["label"].as_str().unwrap_or("")) }
                            td {
                                @match (k["level"].as_str(), k["level_id"].as_str()) {
                                    (Some(l), Some(lid)) => { (l) " " (layout::level_link(&tree, lid)) },
                                    _ => "operator",
                                }
                            }
                            td { @if let Some(t) = api_time(&k["created"]) { (layout::time(t)) } }
                            td { @match revoked { Some(t) => { "revoked " (layout::time(t)) }, None => "active" } }
                            td {
                                @if revoked.is_none() && k["level"].is_string() {
                                    form method="post" action={ "/keys/" (id) "/revoke" } {
                                        (layout::csrf(signed))
                                        button.danger type="submit" data-confirm="Revoke this key? Requests with it fail at once." aria-label={ "Revoke key " (k["label"].as_str().unwrap_or(id)) } { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let mut r = layout::page(signed, Section::Keys, "API keys", body);
    *r.status_mut() = status;
    r
}

#[derive(Deserialize)]
pub struct NewKeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    level: String,
    #[serde(default)]
    label: String,
}

pub async fn create(
    State(c): State<Shared>,
    signed: Signed,
    Form(form): Form<NewKeyForm>,
) -> Response {
    if let Some(r) = signed.refuse(&form.csrf) {
        return r;
    }
    let (level, id) = form.level.split_once(':').unwrap_or(("", ""));
    let body = json!({ "level": level, "id": id, "label": form.label.trim() });
    let answer = c
        .api(&signed.who, Method::POST, "/v1/api-keys", Some(&body))
        .await;
    if answer.ok() {
        let key = answer.body["key"].as_str().map(str::to_owned);
        return render(&c, &signed, key, None, StatusCode::CREATED).await;
    }
    if answer.status == StatusCode::FORBIDDEN {
        return layout::error_page(answer.status, &answer.message());
    }
    render(&c, &signed, None, answer.error(), answer.status).await
}

pub async fn revoke(
    State(c): State<Shared>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    let uri = format!("/v1/api-keys/{}", super::encode(&id));
    match c.act(&signed, &form.csrf, Method::DELETE, &uri).await {
        Ok(answer) if answer.ok() => Redirect::to("/keys").into_response(),
        Ok(answer) => layout::error_page(answer.status, &answer.message()),
        Err(r) => r,
    }
}
