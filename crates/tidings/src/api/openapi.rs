//! The OpenAPI document, generated from the same route table and types the server uses:
//! schemas come from the input and view types (with every type they contain), paths from
//! [`super::entities::COLLECTIONS`]. Every operation lists each status it can answer with
//! its body, so clients and fuzzers can be generated from it; see `docs/api.md`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, RefOr,
    Required, ResponseBuilder, Schema,
};
use utoipa::ToSchema;

use super::emails::EmailView;
use super::endpoints::{EndpointPatch, EndpointView, HealthView};
use super::entities::{Page, SecretBody, COLLECTIONS};
use super::error::ErrorBody;
use super::keys::{KeyView, NewKey};
use super::webhooks::{RecoverRequest, WebhookView};
use crate::changes::Moment;
use crate::domain::entities as e;
use crate::domain::{EventType, Kind, Level};
use crate::store::{EmailStatus, WebhookStatus};

/// Ids are 24 lowercase hex characters.
pub const ID_PATTERN: &str = "^[0-9a-f]{24}$";

/// The input schema, the view schema, and the singular used in operation ids.
fn names(kind: Kind) -> (&'static str, &'static str, &'static str) {
    match kind {
        Kind::Reseller => ("ResellerInput", "ResellerView", "reseller"),
        Kind::Dealer => ("DealerInput", "DealerView", "dealer"),
        Kind::Company => ("CompanyInput", "CompanyView", "company"),
        Kind::Site => ("SiteInput", "SiteView", "site"),
        Kind::User => ("UserInput", "UserView", "user"),
        Kind::Meeting => ("MeetingInput", "MeetingView", "meeting"),
        Kind::Package => ("PackageInput", "Package", "package"),
    }
}

fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn json(schema: &str) -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(schema_ref(schema)))
        .build()
}

fn ok(description: &str, schema: Option<&str>) -> ResponseBuilder {
    let r = ResponseBuilder::new().description(description);
    match schema {
        Some(s) => r.content("application/json", json(s)),
        None => r,
    }
}

fn error(description: &str) -> ResponseBuilder {
    ok(description, Some("ErrorBody"))
}

fn string_with(format: Option<KnownFormat>, pattern: Option<&str>) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(format.map(SchemaFormat::KnownFormat))
        .pattern(pattern)
        .into()
}

fn id_schema() -> Schema {
    string_with(None, Some(ID_PATTERN))
}

fn enum_schema(values: impl IntoIterator<Item = &'static str>) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .into()
}

fn id_param() -> Parameter {
    ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .schema(Some(id_schema()))
        .build()
}

fn query(name: &str, description: &str, schema: Schema) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

fn page_params() -> [Parameter; 2] {
    [
        query(
            "after",
            "Cursor: the `next_cursor` of the previous page",
            id_schema(),
        ),
        query(
            "limit",
            "Page size, default 100",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(Page::MAX))
                .into(),
        ),
    ]
}

fn body(schema: &str, description: &str) -> Option<utoipa::openapi::request_body::RequestBody> {
    Some(
        RequestBodyBuilder::new()
            .description(Some(description))
            .content("application/json", json(schema))
            .required(Some(Required::True))
            .build(),
    )
}

/// What an operation takes, which decides the error statuses it can answer with.
#[derive(Default, Clone, Copy)]
struct Takes {
    body: bool,
    path_id: bool,
    query: bool,
    /// Changes something: a tenant key may be refused (403).
    write: bool,
    /// May answer 404 without an id in its path (a level named in its body).
    not_found: bool,
    /// May answer 409.
    conflict: bool,
}

fn retry_after() -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::Integer))
        .description(Some("Seconds to wait before trying again"))
        .build()
}

/// Adds the error answers every `/v1` operation shares and those that what it takes implies.
fn errors(mut op: OperationBuilder, t: Takes) -> Operation {
    if t.body || t.path_id || t.query {
        op = op.response(
            "400",
            error("The body is not JSON, or the path or query string does not parse"),
        );
    }
    op = op.response(
        "401",
        error("No API key, or an unknown or revoked one").header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .build(),
        ),
    );
    if t.write {
        op = op.response("403", error("The key may not do this"));
    }
    if t.path_id || t.not_found {
        op = op.response("404", error("Not found, or not visible to this key"));
    }
    if t.conflict {
        op = op.response("409", error("Conflicts with the current state"));
    }
    if t.body {
        op = op
            .response("413", error("The body is over 1 MiB"))
            .response("415", error("The body is not sent as `application/json`"));
    }
    if t.body || t.query {
        op = op.response(
            "422",
            error("A field or query parameter is missing, unknown, of the wrong type or invalid; `field` names it"),
        );
    }
    op.response(
        "429",
        error("Too many failed authentications from this address")
            .header("Retry-After", retry_after()),
    )
    .response("500", error("Internal error; see the server log"))
    .response(
        "503",
        error("The store is unavailable or full; try again later")
            .header("Retry-After", retry_after()),
    )
    .build()
}

fn operation(id: &str, tag: &str, summary: &str) -> OperationBuilder {
    OperationBuilder::new()
        .operation_id(Some(id))
        .tag(tag)
        .summary(Some(summary))
}

/// A link from a response whose body has the new entity's `id` to an operation on it; the
/// stateful fuzzers and generated clients follow these.
fn link_to(operation_id: &str) -> utoipa::openapi::link::Link {
    // utoipa 5 spells `Link::operation_id` as `operation_id` on the wire; OpenAPI says
    // `operationId`, so it goes in as an extra key.
    LinkBuilder::new()
        .extensions(Some(Extensions::from_iter([("operationId", operation_id)])))
        .parameter("id", "$response.body#/id")
        .build()
}

/// A link from a response whose body has the new entity's `id` to an operation whose body
/// refers to it: `body` with `"$id"` standing for that id.
fn link_with_body(operation_id: &str, body: serde_json::Value) -> utoipa::openapi::link::Link {
    fn fill(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::String(s) if s == "$id" => "$response.body#/id".into(),
            serde_json::Value::Object(m) => m.into_iter().map(|(k, v)| (k, fill(v))).collect(),
            other => other,
        }
    }
    LinkBuilder::new()
        .extensions(Some(Extensions::from_iter([("operationId", operation_id)])))
        .request_body(Some(fill(body)))
        .build()
}

/// What can be made once an entity of `kind` exists, and the body that refers to it.
fn made_next(kind: Kind) -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let mut next = match kind {
        Kind::Reseller => vec![
            ("create_dealer", json!({"reseller": {"id": "$id"}})),
            (
                "create_user",
                json!({"entity": {"type": "reseller", "id": "$id"}}),
            ),
        ],
        Kind::Dealer => vec![
            ("create_company", json!({"dealer": {"id": "$id"}})),
            (
                "create_user",
                json!({"entity": {"type": "dealer", "id": "$id"}}),
            ),
        ],
        Kind::Company => vec![
            ("create_site", json!({"company": {"id": "$id"}})),
            (
                "create_user",
                json!({"entity": {"type": "company", "id": "$id"}}),
            ),
            ("create_meeting", json!({"company": {"id": "$id"}})),
        ],
        Kind::Site => vec![],
        Kind::User => vec![("create_meeting", json!({"created_by": {"id": "$id"}}))],
        Kind::Meeting => vec![],
        Kind::Package => vec![("create_company", json!({"package": {"id": "$id"}}))],
    };
    if let Some(level) = kind.level() {
        next.push(("create_api_key", json!({"level": level, "id": "$id"})));
        next.push(("recover_webhooks", json!({"level_id": "$id"})));
    }
    next
}

pub fn document() -> OpenApi {
    let mut paths = Paths::new();
    let mut add = |path: &str, method: HttpMethod, op: Operation| {
        paths.add_path_operation(path, vec![method], op);
    };
    for (name, kind) in COLLECTIONS {
        let (input, view, one) = names(kind);
        let patch = format!("{input}Patch");
        let tag = name;

        let mut created = ok(
            "Created; the body equals the `data` of its webhooks",
            Some(view),
        );
        let mut linked = vec![
            format!("get_{one}"),
            format!("update_{one}"),
            format!("delete_{one}"),
        ];
        if kind.level().is_some() {
            linked.push(format!("get_{one}_secret"));
            linked.push(format!("rotate_{one}_secret"));
            linked.push(format!("get_{one}_endpoint"));
            linked.push(format!("update_{one}_endpoint"));
        }
        if kind == Kind::Meeting {
            linked.extend(Moment::ALL.iter().map(|(_, m, _)| format!("{m}_meeting")));
        }
        for l in &linked {
            created = created.link(l, link_to(l));
        }
        for (target, body) in made_next(kind) {
            created = created.link(target, link_with_body(target, body));
        }
        add(
            &format!("/v1/{name}"),
            HttpMethod::Post,
            errors(
                operation(&format!("create_{one}"), tag, &format!("Create a {kind}"))
                    .request_body(body(
                        input,
                        "The seed's field names and nesting; references as {\"id\": ...}",
                    ))
                    .response("201", created),
                Takes {
                    body: true,
                    write: true,
                    ..Takes::default()
                },
            ),
        );
        let [after, limit] = page_params();
        add(
            &format!("/v1/{name}"),
            HttpMethod::Get,
            errors(
                operation(
                    &format!("list_{name}"),
                    tag,
                    &format!("List {name} in creation order"),
                )
                .parameter(after)
                .parameter(limit)
                .response(
                    "200",
                    ok(
                        "A page; pass `next_cursor` as `after` for the next",
                        Some(&format!("{view}Page")),
                    ),
                ),
                Takes {
                    query: true,
                    ..Takes::default()
                },
            ),
        );
        let item = format!("/v1/{name}/{{id}}");
        add(
            &item,
            HttpMethod::Get,
            errors(
                operation(&format!("get_{one}"), tag, &format!("Read a {kind}"))
                    .parameter(id_param())
                    .response("200", ok("The entity", Some(view))),
                Takes {
                    path_id: true,
                    ..Takes::default()
                },
            ),
        );
        add(
            &item,
            HttpMethod::Patch,
            errors(
                operation(
                    &format!("update_{one}"),
                    tag,
                    "JSON merge patch (RFC 7396); a patch that changes nothing emits no event",
                )
                .parameter(id_param())
                .request_body(body(
                    &patch,
                    "Any subset of the create body; null clears an optional field",
                ))
                .response("200", ok("The entity after the change", Some(view))),
                Takes {
                    body: true,
                    path_id: true,
                    write: true,
                    conflict: true,
                    ..Takes::default()
                },
            ),
        );
        add(
            &item,
            HttpMethod::Delete,
            errors(
                operation(&format!("delete_{one}"), tag, &format!("Delete a {kind}"))
                    .parameter(id_param())
                    .response(
                        "204",
                        ok("Deleted; the *_DELETED event carries only the id", None),
                    ),
                Takes {
                    path_id: true,
                    write: true,
                    conflict: true,
                    ..Takes::default()
                },
            ),
        );
        if kind.level().is_some() {
            add(
                &format!("/v1/{name}/{{id}}/secret"),
                HttpMethod::Get,
                errors(
                    operation(
                        &format!("get_{one}_secret"),
                        tag,
                        &format!("The {kind}'s signing secret"),
                    )
                    .parameter(id_param())
                    .response("200", ok("{\"secret\": \"whsec_...\"}", Some("SecretBody"))),
                    Takes {
                        path_id: true,
                        ..Takes::default()
                    },
                ),
            );
            add(
                &format!("/v1/{name}/{{id}}/secret/rotate"),
                HttpMethod::Post,
                errors(
                    operation(
                        &format!("rotate_{one}_secret"),
                        tag,
                        "Make a new signing secret; the old one also signs for 24 hours",
                    )
                    .parameter(id_param())
                    .response("200", ok("The new secret", Some("SecretBody"))),
                    Takes {
                        path_id: true,
                        write: true,
                        ..Takes::default()
                    },
                ),
            );
            add(
                &format!("/v1/{name}/{{id}}/endpoint"),
                HttpMethod::Get,
                errors(
                    operation(
                        &format!("get_{one}_endpoint"),
                        tag,
                        &format!("The {kind}'s endpoint settings and delivery health"),
                    )
                    .parameter(id_param())
                    .response("200", ok("The endpoint", Some("EndpointView"))),
                    Takes {
                        path_id: true,
                        ..Takes::default()
                    },
                ),
            );
            add(
                &format!("/v1/{name}/{{id}}/endpoint"),
                HttpMethod::Patch,
                errors(
                    operation(
                        &format!("update_{one}_endpoint"),
                        tag,
                        &format!(
                            "Change the {kind}'s endpoint settings: event_types, ordered, enabled, success"
                        ),
                    )
                    .parameter(id_param())
                    .request_body(body(
                        "EndpointPatch",
                        "{\"event_types\": [\"MEETING_ENDED\"], \"ordered\": true, \"success\": \"2xx\"}",
                    ))
                    .response("200", ok("The endpoint as changed", Some("EndpointView"))),
                    Takes {
                        path_id: true,
                        body: true,
                        write: true,
                        ..Takes::default()
                    },
                ),
            );
        }
    }
    for (_, moment, _) in Moment::ALL {
        add(
            &format!("/v1/meetings/{{id}}/{moment}"),
            HttpMethod::Post,
            errors(
                operation(
                    &format!("{moment}_meeting"),
                    "meetings",
                    &format!("Report the meeting moment `{moment}` and emit its event"),
                )
                .parameter(id_param())
                .response("200", ok("The meeting now", Some("MeetingView"))),
                Takes {
                    path_id: true,
                    write: true,
                    conflict: true,
                    ..Takes::default()
                },
            ),
        );
    }
    let [after, limit] = page_params();
    add(
        "/v1/webhooks",
        HttpMethod::Get,
        errors(
            operation(
                "list_webhooks",
                "webhooks",
                "List webhooks, newest last, with filters",
            )
            .parameter(query(
                "status",
                "Only webhooks in this state",
                enum_schema(["pending", "succeeded", "failed", "disabled"]),
            ))
            .parameter(query(
                "type",
                "Only webhooks of this event type",
                enum_schema(EventType::ALL.map(EventType::as_str)),
            ))
            .parameter(query(
                "level_id",
                "Only webhooks to this level",
                id_schema(),
            ))
            .parameter(query(
                "subject_id",
                "Only webhooks about this entity",
                id_schema(),
            ))
            .parameter(query(
                "since",
                "Only webhooks created at or after this time",
                string_with(Some(KnownFormat::DateTime), None),
            ))
            .parameter(query(
                "until",
                "Only webhooks created before this time",
                string_with(Some(KnownFormat::DateTime), None),
            ))
            .parameter(after)
            .parameter(limit)
            .response(
                "200",
                ok(
                    "A page of webhooks, without their attempts",
                    Some("WebhookViewPage"),
                ),
            ),
            Takes {
                query: true,
                ..Takes::default()
            },
        ),
    );
    add(
        "/v1/webhooks/{id}",
        HttpMethod::Get,
        errors(
            operation("get_webhook", "webhooks", "A webhook with every attempt")
                .parameter(id_param())
                .response(
                    "200",
                    ok("The webhook with every attempt", Some("WebhookView")),
                ),
            Takes {
                path_id: true,
                ..Takes::default()
            },
        ),
    );
    add(
        "/v1/webhooks/{id}/retry",
        HttpMethod::Post,
        errors(
            operation(
                "retry_webhook",
                "webhooks",
                "Send again now (a failed webhook gets one more attempt, numbered on)",
            )
            .parameter(id_param())
            .response("202", ok("Queued", Some("WebhookView"))),
            Takes {
                path_id: true,
                write: true,
                conflict: true,
                ..Takes::default()
            },
        ),
    );
    add(
        "/v1/webhooks/recover",
        HttpMethod::Post,
        errors(
            operation(
                "recover_webhooks",
                "webhooks",
                "Re-send every failed or disabled webhook of a level created since a time",
            )
            .request_body(body(
                "RecoverRequest",
                "{\"level_id\": ..., \"since\": \"2020-07-15T12:33:14.000Z\"}",
            ))
            .response(
                "202",
                ok("How many webhooks were queued again", Some("Recovered")),
            ),
            Takes {
                body: true,
                write: true,
                not_found: true,
                // The level's endpoint is disabled: enable it first.
                conflict: true,
                ..Takes::default()
            },
        ),
    );
    let [after, limit] = page_params();
    add(
        "/v1/emails",
        HttpMethod::Get,
        errors(
            operation(
                "list_emails",
                "emails",
                "List failure e-mails, with filters",
            )
            .parameter(query(
                "level_id",
                "Only e-mails about this level's URL",
                id_schema(),
            ))
            .parameter(query(
                "status",
                "Only e-mails in this state",
                enum_schema(["queued", "sent", "no_recipient"]),
            ))
            .parameter(after)
            .parameter(limit)
            .response("200", ok("A page of e-mails", Some("EmailViewPage"))),
            Takes {
                query: true,
                ..Takes::default()
            },
        ),
    );
    add(
        "/v1/api-keys",
        HttpMethod::Post,
        errors(
            operation(
                "create_api_key",
                "api-keys",
                "Make a key bound to one level (operator only); the key is shown once",
            )
            .request_body(body(
                "NewKey",
                "{\"level\": \"dealer\", \"id\": ..., \"label\": ...}",
            ))
            .response(
                "201",
                ok("The key, with `key` set this once", Some("KeyView"))
                    .link("revoke_api_key", link_to("revoke_api_key")),
            ),
            Takes {
                body: true,
                write: true,
                ..Takes::default()
            },
        ),
    );
    add(
        "/v1/api-keys",
        HttpMethod::Get,
        errors(
            operation(
                "list_api_keys",
                "api-keys",
                "List keys (never the keys themselves; operator only)",
            )
            .response("200", ok("Every key", Some("KeyViewPage"))),
            Takes {
                write: true,
                ..Takes::default()
            },
        ),
    );
    add(
        "/v1/api-keys/{id}",
        HttpMethod::Delete,
        errors(
            operation(
                "revoke_api_key",
                "api-keys",
                "Revoke a key (operator only); it stops working at once",
            )
            .parameter(id_param())
            .response("204", ok("Revoked", None)),
            Takes {
                path_id: true,
                write: true,
                ..Takes::default()
            },
        ),
    );

    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Tidings")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("Hierarchy-aware webhook delivery")),
        )
        .paths(paths)
        .components(Some(components()))
        .security(Some([SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]))
        .build()
}

/// A type's schema and those of every type it contains.
fn with_nested<T: ToSchema>(out: &mut BTreeMap<String, RefOr<Schema>>) {
    let mut found = vec![(T::name().into_owned(), T::schema())];
    T::schemas(&mut found);
    out.extend(found);
}

fn components() -> utoipa::openapi::Components {
    let mut builder = ComponentsBuilder::new();
    for (name, schema) in component_schemas() {
        builder = builder.schema(name, schema);
    }
    builder
        .security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        )
        .build()
}

/// The first key of a PATCH body for `kind` that names no field, as a dotted path. A `null`
/// for a key that is not there removes nothing (RFC 7396), so the merged body alone would
/// not show such a key; it is refused like any unknown field.
pub fn unknown_patch_field(kind: Kind, patch: &serde_json::Value) -> Option<String> {
    static SCHEMAS: OnceLock<BTreeMap<String, RefOr<Schema>>> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(component_schemas);
    unknown_in(schemas, &format!("{}Patch", names(kind).0), patch, "")
}

fn unknown_in(
    schemas: &BTreeMap<String, RefOr<Schema>>,
    name: &str,
    value: &serde_json::Value,
    prefix: &str,
) -> Option<String> {
    let (Some(RefOr::T(Schema::Object(object))), serde_json::Value::Object(fields)) =
        (schemas.get(name), value)
    else {
        return None;
    };
    for (key, value) in fields {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let Some(property) = object.properties.get(key) else {
            return Some(path);
        };
        let inner = match property {
            RefOr::Ref(r) => Some(r),
            RefOr::T(Schema::OneOf(one_of)) => one_of.items.iter().find_map(|i| match i {
                RefOr::Ref(r) => Some(r),
                _ => None,
            }),
            _ => None,
        };
        let inner = inner.and_then(|r| r.ref_location.strip_prefix("#/components/schemas/"));
        if let Some(found) = inner.and_then(|n| unknown_in(schemas, n, value, &path)) {
            return Some(found);
        }
    }
    None
}

fn component_schemas() -> BTreeMap<String, RefOr<Schema>> {
    let mut schemas = BTreeMap::new();
    with_nested::<e::ResellerInput>(&mut schemas);
    with_nested::<e::DealerInput>(&mut schemas);
    with_nested::<e::CompanyInput>(&mut schemas);
    with_nested::<e::SiteInput>(&mut schemas);
    with_nested::<e::UserInput>(&mut schemas);
    with_nested::<e::MeetingInput>(&mut schemas);
    with_nested::<e::PackageInput>(&mut schemas);
    with_nested::<e::ResellerView>(&mut schemas);
    with_nested::<e::DealerView>(&mut schemas);
    with_nested::<e::CompanyView>(&mut schemas);
    with_nested::<e::SiteView>(&mut schemas);
    with_nested::<e::UserView>(&mut schemas);
    with_nested::<e::MeetingView>(&mut schemas);
    with_nested::<e::Package>(&mut schemas);
    with_nested::<WebhookView>(&mut schemas);
    with_nested::<EmailView>(&mut schemas);
    with_nested::<ErrorBody>(&mut schemas);
    with_nested::<RecoverRequest>(&mut schemas);
    with_nested::<SecretBody>(&mut schemas);
    with_nested::<EndpointView>(&mut schemas);
    with_nested::<EndpointPatch>(&mut schemas);
    with_nested::<HealthView>(&mut schemas);
    with_nested::<NewKey>(&mut schemas);
    with_nested::<KeyView>(&mut schemas);
    with_nested::<Level>(&mut schemas);
    with_nested::<EventType>(&mut schemas);
    // The derive cannot see the wire names the `event_types!` macro gives the variants.
    schemas.insert(
        "EventType".into(),
        enum_schema(EventType::ALL.map(EventType::as_str)).into(),
    );
    with_nested::<WebhookStatus>(&mut schemas);
    with_nested::<EmailStatus>(&mut schemas);

    // A PATCH body is merged into the current record, so no field of it is required, and
    // an object in it (a contact, a reference) is itself a partial one.
    let inputs: Vec<String> = COLLECTIONS
        .iter()
        .map(|(_, k)| names(*k).0.to_owned())
        .collect();
    for input in inputs {
        partial(&mut schemas, &input);
    }

    for view in [
        "ResellerView",
        "DealerView",
        "CompanyView",
        "SiteView",
        "UserView",
        "MeetingView",
        "Package",
        "WebhookView",
        "EmailView",
        "KeyView",
    ] {
        schemas.insert(format!("{view}Page"), page_of(view, view != "KeyView"));
    }
    schemas.insert(
        "Recovered".into(),
        ObjectBuilder::new()
            .property(
                "recovered",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .minimum(Some(0)),
            )
            .required("recovered")
            .into(),
    );
    schemas
}

/// `{"data": [view...], "next_cursor": id | null}`.
fn page_of(view: &str, paged: bool) -> RefOr<Schema> {
    let cursor: Schema = if paged {
        OneOfBuilder::new()
            .item(id_schema())
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .description(Some("Pass as `after` for the next page; null on the last"))
            .into()
    } else {
        ObjectBuilder::new()
            .schema_type(Type::Null)
            .description(Some("Always null: every key is on one page"))
            .into()
    };
    ObjectBuilder::new()
        .property("data", ArrayBuilder::new().items(schema_ref(view)))
        .required("data")
        .property("next_cursor", cursor)
        .required("next_cursor")
        .into()
}

/// Adds `<name>Patch`: the schema `name` with no required field, and each object it refers
/// to replaced by its own partial form. Arrays are replaced whole by a merge patch, so their
/// items keep their full schema. A field that may be left out of a create body may be `null`
/// in a patch: that removes it, back to its default.
fn partial(schemas: &mut BTreeMap<String, RefOr<Schema>>, name: &str) -> String {
    let patch_name = format!("{name}Patch");
    if schemas.contains_key(&patch_name) {
        return patch_name;
    }
    let Some(RefOr::T(Schema::Object(object))) = schemas.get(name).cloned() else {
        return name.to_owned();
    };
    let mut object = object;
    let required = std::mem::take(&mut object.required);
    for (field, property) in object.properties.iter_mut() {
        *property = partial_property(schemas, property.clone());
        if !required.contains(field) {
            *property = nullable(property.clone());
        }
    }
    schemas.insert(patch_name.clone(), RefOr::T(Schema::Object(object)));
    patch_name
}

fn partial_property(
    schemas: &mut BTreeMap<String, RefOr<Schema>>,
    property: RefOr<Schema>,
) -> RefOr<Schema> {
    match property {
        RefOr::Ref(r) => match referred_object(schemas, &r) {
            Some(name) => schema_ref(&partial(schemas, &name)),
            None => RefOr::Ref(r),
        },
        RefOr::T(Schema::OneOf(mut one_of)) => {
            one_of.items = one_of
                .items
                .into_iter()
                .map(|item| partial_property(schemas, item))
                .collect();
            RefOr::T(Schema::OneOf(one_of))
        }
        other => other,
    }
}

fn nullable(schema: RefOr<Schema>) -> RefOr<Schema> {
    let is_null = |s: &RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if matches!(&o.schema_type, SchemaType::Type(Type::Null)));
    match schema {
        RefOr::T(Schema::Object(o)) if matches!(&o.schema_type, SchemaType::Array(types) if types.contains(&Type::Null)) => {
            RefOr::T(Schema::Object(o))
        }
        RefOr::T(Schema::Object(mut o)) if !matches!(o.schema_type, SchemaType::AnyValue) => {
            if let SchemaType::Type(t) = o.schema_type.clone() {
                if t != Type::Null {
                    o.schema_type = SchemaType::Array(vec![t, Type::Null]);
                }
            }
            RefOr::T(Schema::Object(o))
        }
        RefOr::T(Schema::OneOf(one_of)) if one_of.items.iter().any(is_null) => {
            RefOr::T(Schema::OneOf(one_of))
        }
        other => OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .item(other)
            .into(),
    }
}

/// The name of the object schema a reference points to, if it is an object.
fn referred_object(schemas: &BTreeMap<String, RefOr<Schema>>, r: &Ref) -> Option<String> {
    let name = r.ref_location.strip_prefix("#/components/schemas/")?;
    match schemas.get(name) {
        Some(RefOr::T(Schema::Object(o)))
            if matches!(o.schema_type, SchemaType::Type(Type::Object)) =>
        {
            Some(name.to_owned())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    fn doc() -> Value {
        serde_json::to_value(document()).expect("the document serializes")
    }

    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    /// Every operation with its method and path.
    fn operations(doc: &Value) -> Vec<(String, &Value)> {
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                ops.push((format!("{} {path}", method.to_uppercase()), op));
            }
        }
        ops
    }

    #[test]
    fn every_ref_names_a_defined_schema() {
        let doc = doc();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 100, "only {} refs", found.len());
        let dangling: BTreeSet<&str> = found
            .into_iter()
            .filter(|r| {
                r.strip_prefix("#/components/schemas/")
                    .is_none_or(|name| !schemas.contains_key(name))
            })
            .collect();
        assert!(dangling.is_empty(), "undefined: {dangling:?}");
    }

    #[test]
    fn every_parameter_has_a_schema_and_every_body_is_json() {
        let doc = doc();
        for (label, op) in operations(&doc) {
            for p in op["parameters"].as_array().into_iter().flatten() {
                assert!(
                    p["schema"].is_object(),
                    "{label}: parameter {} has no schema",
                    p["name"]
                );
                if p["in"] == "path" {
                    assert_eq!(p["required"], true, "{label}: {}", p["name"]);
                }
            }
            if let Some(body) = op.get("requestBody") {
                let content = body["content"].as_object().expect("content");
                assert_eq!(
                    content.keys().collect::<Vec<_>>(),
                    ["application/json"],
                    "{label}"
                );
                assert!(content["application/json"]["schema"].is_object(), "{label}");
                assert_eq!(body["required"], true, "{label}");
            }
        }
    }

    #[test]
    fn every_operation_documents_the_errors_it_can_answer_with() {
        let doc = doc();
        let ops = operations(&doc);
        assert_eq!(ops.len(), 66);
        for (label, op) in &ops {
            let responses = op["responses"].as_object().expect("responses");
            let has = |status: &str| responses.contains_key(status);
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let path = params.iter().any(|p| p["in"] == "path");
            let query = params.iter().any(|p| p["in"] == "query");
            let body = op.get("requestBody").is_some();
            let mut expected = vec!["401", "429", "500", "503"];
            if path || query || body {
                expected.push("400");
            }
            if path {
                expected.push("404");
            }
            if query || body {
                expected.push("422");
            }
            if body {
                expected.extend(["413", "415"]);
            }
            for status in expected {
                assert!(has(status), "{label} does not document {status}");
            }
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{label}: no success status"
            );
            for (status, response) in responses {
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(schema, "#/components/schemas/ErrorBody", "{label} {status}");
                } else if status != "204" {
                    assert!(schema.is_string(), "{label} {status} has no body schema");
                }
            }
        }
    }

    #[test]
    fn event_types_are_documented_by_their_wire_names() {
        let doc = serde_json::to_value(document()).unwrap();
        let names: Vec<&str> = doc["components"]["schemas"]["EventType"]["enum"]
            .as_array()
            .expect("EventType is an enum")
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(names, EventType::ALL.map(EventType::as_str));
    }

    #[test]
    fn operation_ids_are_unique_and_links_name_them() {
        let doc = doc();
        let ops = operations(&doc);
        let ids: BTreeSet<&str> = ops
            .iter()
            .map(|(label, op)| {
                op["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{label}"))
            })
            .collect();
        assert_eq!(ids.len(), ops.len(), "operation ids repeat");
        let mut links = 0;
        for (label, op) in &ops {
            for response in op["responses"].as_object().expect("responses").values() {
                for (name, link) in response["links"].as_object().into_iter().flatten() {
                    let target = link["operationId"].as_str().unwrap_or_default();
                    assert!(ids.contains(target), "{label}: link {name} to {target}");
                    links += 1;
                }
            }
        }
        assert!(links >= 30, "only {links} links");
    }

    #[test]
    fn unknown_patch_fields_are_found_at_any_depth() {
        use serde_json::json;
        let unknown = |v| unknown_patch_field(Kind::Dealer, &v);
        assert_eq!(unknown(json!({"name": "D", "webhook_url": null})), None);
        assert_eq!(unknown(json!({"contact": {"phone": null}})), None);
        assert_eq!(unknown(json!({"reseller": {"id": "x"}})), None);
        assert_eq!(unknown(json!({"nickname": null})), Some("nickname".into()));
        assert_eq!(
            unknown(json!({"contact": {"nickname": null}})),
            Some("contact.nickname".into())
        );
        assert_eq!(
            unknown(json!({"notification_contact": {"cc": null}})),
            Some("notification_contact.cc".into())
        );
        // Arrays are replaced whole and checked when the merged body is parsed.
        assert_eq!(
            unknown_patch_field(Kind::Package, &json!({"features": [{"x": null}]})),
            None
        );
    }

    #[test]
    fn a_patch_body_requires_nothing_not_even_inside_its_objects() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        let patch = &schemas["DealerInputPatch"];
        assert!(patch.get("required").is_none(), "{patch}");
        assert_eq!(
            patch["properties"]["contact"]["$ref"],
            "#/components/schemas/ContactInputPatch"
        );
        assert_eq!(
            patch["properties"]["reseller"]["$ref"],
            "#/components/schemas/RefPatch"
        );
        assert!(schemas["ContactInputPatch"].get("required").is_none());
        // `null` removes a field, back to its default: allowed where the field may be left out.
        assert_eq!(
            patch["properties"]["suspended"]["type"],
            serde_json::json!(["boolean", "null"])
        );
        assert_eq!(patch["properties"]["name"]["type"], "string");
        let features = &schemas["PackageInputPatch"]["properties"]["features"]["oneOf"];
        assert_eq!(features[0]["type"], "null");
        assert_eq!(features[1]["type"], "array");
        // The create body keeps its required fields.
        assert_eq!(
            schemas["DealerInput"]["required"],
            serde_json::json!(["name", "contact", "reseller"])
        );
    }
}
