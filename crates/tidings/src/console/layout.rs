//! The page shell, navigation and the small pieces every page uses.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::tree::{self, Tree};
use super::Signed;
use crate::domain::{EntityId, Millis};

/// Which section a page belongs to, for the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Levels,
    Deliveries,
    Emails,
    Keys,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Tidings" }
            link rel="stylesheet" href="/assets/console.css";
            script src="/assets/console.js" defer {}
        }
    }
}

/// A page for a signed-in key.
pub fn page(signed: &Signed, section: Section, title: &str, body: Markup) -> Response {
    let who = match signed.who.own_level() {
        None => "operator".to_owned(),
        Some(id) => format!("{} key {id}", level_name(&signed.who)),
    };
    let nav = [
        (Section::Overview, "/", "Overview"),
        (Section::Levels, "/levels", "Hierarchy"),
        (Section::Deliveries, "/deliveries", "Deliveries"),
        (Section::Emails, "/emails", "Failure e-mails"),
    ];
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "Tidings" }
                    nav aria-label="Sections" {
                        ul {
                            @for (s, href, name) in nav {
                                li { a href=(href) aria-current=[(s == section).then_some("page")] { (name) } }
                            }
                            @if signed.who.is_operator() {
                                li { a href="/keys" aria-current=[(section == Section::Keys).then_some("page")] { "API keys" } }
                            }
                        }
                    }
                    div.who {
                        span title="The key you signed in with" { (who) }
                        form method="post" action="/sign-out" {
                            (csrf(signed))
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

fn level_name(p: &crate::tenancy::Principal) -> &'static str {
    match p {
        crate::tenancy::Principal::Tenant { level, .. } => level.as_str(),
        crate::tenancy::Principal::Operator => "operator",
    }
}

/// A page without navigation (sign-in, errors).
pub fn bare(title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(title))
                body { (body) }
            }
        }
        .into_string(),
    )
}

pub fn error_page(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = html! {
        main.signin {
            h1 { (title) }
            p role="alert" { (message) }
            p { a href="/" { "Back to the console" } }
        }
    };
    (status, bare(title, body)).into_response()
}

/// The hidden CSRF field every form carries.
pub fn csrf(signed: &Signed) -> Markup {
    html! { input type="hidden" name="csrf" value=(signed.csrf); }
}

/// A time in UTC; the page's script shows it in the viewer's zone, UTC stays on hover.
pub fn time(t: Millis) -> Markup {
    let utc = t.to_rfc3339();
    let shown = utc.replace('T', " ");
    let shown = shown
        .split('.')
        .next()
        .unwrap_or(&shown)
        .trim_end_matches('Z');
    html! { time datetime=(utc) title={ (utc) " (UTC)" } { (shown) " UTC" } }
}

pub fn opt_time(t: Option<Millis>) -> Markup {
    match t {
        Some(t) => time(t),
        None => html! { span.muted { "never" } },
    }
}

/// A short age such as `3 min` for how long ago `t` was.
pub fn age(now: Millis, t: Millis) -> String {
    let s = ((now.0 - t.0) / 1000).max(0);
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

pub fn status_badge(status: &str) -> Markup {
    html! { span class={ "badge " (status) } { (status) } }
}

/// A field's error message, linked to its input by `id`.
pub fn field_error(id: &str, message: &Option<String>) -> Markup {
    html! {
        @if let Some(m) = message {
            p.field-error id={ (id) "-error" } role="alert" { (m) }
        }
    }
}

/// A filter's `<select>` of `options`, with "any" first (the empty value) and `chosen`
/// selected.
pub fn filter_select(id: &str, name: &str, options: &[&str], chosen: Option<&str>) -> Markup {
    html! {
        select id=(id) name=(name) {
            option value="" { "any" }
            @for o in options {
                option value=(o) selected[chosen == Some(*o)] { (o) }
            }
        }
    }
}

/// The level `id` names, linked to its page by its name when the key sees it; the bare id
/// otherwise.
pub fn level_link(tree: &Tree, id: &str) -> Markup {
    html! {
        @match EntityId::parse(id).ok().and_then(|i| tree.get(&i)) {
            Some(n) => a href={ "/levels/" (tree::collection(n.level)) "/" (n.id) } { (n.name) },
            None => code { (id) },
        }
    }
}
