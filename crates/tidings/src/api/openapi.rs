//! The OpenAPI document, generated from the same route table and types the server uses:
//! schemas come from the input and view types, paths from [`super::entities::COLLECTIONS`].

use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, RefOr,
    Required, ResponseBuilder, Schema,
};

use super::emails::EmailView;
use super::endpoints::{EndpointPatch, EndpointView, HealthView};
use super::entities::SecretBody;
use super::entities::COLLECTIONS;
use super::error::ErrorBody;
use super::keys::{KeyView, NewKey};
use super::webhooks::RecoverRequest;
use super::webhooks::WebhookView;
use crate::changes::Moment;
use crate::domain::entities as e;
use crate::domain::Kind;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};

fn names(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Reseller => ("ResellerInput", "ResellerView"),
        Kind::Dealer => ("DealerInput", "DealerView"),
        Kind::Company => ("CompanyInput", "CompanyView"),
        Kind::Site => ("SiteInput", "SiteView"),
        Kind::User => ("UserInput", "UserView"),
        Kind::Meeting => ("MeetingInput", "MeetingView"),
        Kind::Package => ("PackageInput", "Package"),
    }
}

fn json(schema: &str) -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(RefOr::<Schema>::Ref(Ref::from_schema_name(schema))))
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

fn id_param() -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .build()
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

pub fn document() -> OpenApi {
    let mut paths = Paths::new();
    for (name, kind) in COLLECTIONS {
        let (input, view) = names(kind);
        let tag = name;
        paths.add_path_operation(
            format!("/v1/{name}"),
            vec![HttpMethod::Post],
            OperationBuilder::new()
                .tag(tag)
                .summary(Some(format!("Create a {kind}")))
                .request_body(body(
                    input,
                    "The seed's field names and nesting; references as {\"id\": ...}",
                ))
                .response(
                    "201",
                    ok(
                        "Created; the body equals the `data` of its webhooks",
                        Some(view),
                    ),
                )
                .response("400", error("Not JSON"))
                .response(
                    "422",
                    error("A field is missing, unknown, of the wrong type or invalid"),
                ),
        );
        paths.add_path_operation(
            format!("/v1/{name}"),
            vec![HttpMethod::Get],
            OperationBuilder::new()
                .tag(tag)
                .summary(Some(format!("List {name} in creation order")))
                .parameter(
                    ParameterBuilder::new()
                        .name("after")
                        .parameter_in(ParameterIn::Query)
                        .description(Some("cursor: the `next_cursor` of the previous page")),
                )
                .parameter(
                    ParameterBuilder::new()
                        .name("limit")
                        .parameter_in(ParameterIn::Query)
                        .description(Some("1..=1000, default 100")),
                )
                .response(
                    "200",
                    ok("{\"data\": [...], \"next_cursor\": id or null}", None),
                ),
        );
        let item = format!("/v1/{name}/{{id}}");
        paths.add_path_operation(
            &item,
            vec![HttpMethod::Get],
            OperationBuilder::new()
                .tag(tag)
                .parameter(id_param())
                .response("200", ok("The entity", Some(view)))
                .response("404", error("Not found")),
        );
        paths.add_path_operation(
            &item,
            vec![HttpMethod::Patch],
            OperationBuilder::new()
                .tag(tag)
                .summary(Some(
                    "JSON merge patch (RFC 7396); a patch that changes nothing emits no event",
                ))
                .parameter(id_param())
                .request_body(body(
                    input,
                    "Any subset of the create body; null clears an optional field",
                ))
                .response("200", ok("The entity after the change", Some(view)))
                .response("404", error("Not found"))
                .response("422", error("Invalid field or reference")),
        );
        paths.add_path_operation(
            &item,
            vec![HttpMethod::Delete],
            OperationBuilder::new()
                .tag(tag)
                .parameter(id_param())
                .response(
                    "204",
                    ok("Deleted; the *_DELETED event carries only the id", None),
                )
                .response("404", error("Not found"))
                .response("409", error("Other entities still refer to it")),
        );
    }
    for (_, moment, _) in Moment::ALL {
        paths.add_path_operation(
            format!("/v1/meetings/{{id}}/{moment}"),
            vec![HttpMethod::Post],
            OperationBuilder::new()
                .tag("meetings")
                .summary(Some(format!(
                    "Report the meeting moment `{moment}` and emit its event"
                )))
                .parameter(id_param())
                .response("200", ok("The meeting now", Some("MeetingView")))
                .response("404", error("Not found")),
        );
    }
    paths.add_path_operation(
        "/v1/webhooks",
        vec![HttpMethod::Get],
        OperationBuilder::new()
            .tag("webhooks")
            .summary(Some(
                "List webhooks; filter by status, type, level_id, subject_id, since, until",
            ))
            .response(
                "200",
                ok(
                    "{\"data\": [WebhookView...], \"next_cursor\": id or null}",
                    None,
                ),
            ),
    );
    paths.add_path_operation(
        "/v1/webhooks/{id}",
        vec![HttpMethod::Get],
        OperationBuilder::new()
            .tag("webhooks")
            .parameter(id_param())
            .response(
                "200",
                ok("The webhook with every attempt", Some("WebhookView")),
            )
            .response("404", error("Not found")),
    );
    paths.add_path_operation(
        "/v1/emails",
        vec![HttpMethod::Get],
        OperationBuilder::new()
            .tag("emails")
            .summary(Some(
                "List failure e-mails; filter by level_id and status (queued, sent, no_recipient)",
            ))
            .response(
                "200",
                ok(
                    "{\"data\": [EmailView...], \"next_cursor\": id or null}",
                    None,
                ),
            ),
    );
    paths.add_path_operation(
        "/v1/webhooks/{id}/retry",
        vec![HttpMethod::Post],
        OperationBuilder::new()
            .tag("webhooks")
            .summary(Some(
                "Send again now (a failed webhook gets one more attempt, numbered on)",
            ))
            .parameter(id_param())
            .response("202", ok("Queued", Some("WebhookView")))
            .response("404", error("Not found"))
            .response("409", error("An attempt is in flight")),
    );
    paths.add_path_operation(
        "/v1/webhooks/recover",
        vec![HttpMethod::Post],
        OperationBuilder::new()
            .tag("webhooks")
            .summary(Some(
                "Re-send every failed or disabled webhook of a level created since a time",
            ))
            .request_body(body(
                "RecoverRequest",
                "{\"level_id\": ..., \"since\": \"2020-07-15T12:33:14.000Z\"}",
            ))
            .response("202", ok("{\"recovered\": count}", None))
            .response("404", error("Level not found"))
            .response(
                "409",
                error("The level's endpoint is disabled: enable it first"),
            ),
    );
    for (name, kind) in COLLECTIONS.into_iter().filter(|(_, k)| k.level().is_some()) {
        paths.add_path_operation(
            format!("/v1/{name}/{{id}}/secret"),
            vec![HttpMethod::Get],
            OperationBuilder::new()
                .tag(name)
                .summary(Some(format!("The {kind}'s signing secret")))
                .parameter(id_param())
                .response("200", ok("{\"secret\": \"whsec_...\"}", Some("SecretBody")))
                .response("404", error("Not found")),
        );
        paths.add_path_operation(
            format!("/v1/{name}/{{id}}/secret/rotate"),
            vec![HttpMethod::Post],
            OperationBuilder::new()
                .tag(name)
                .summary(Some(
                    "Make a new signing secret; the old one also signs for 24 hours",
                ))
                .parameter(id_param())
                .response("200", ok("The new secret", Some("SecretBody")))
                .response("404", error("Not found")),
        );
        paths.add_path_operation(
            format!("/v1/{name}/{{id}}/endpoint"),
            vec![HttpMethod::Get],
            OperationBuilder::new()
                .tag(name)
                .summary(Some(format!(
                    "The {kind}'s endpoint settings and delivery health"
                )))
                .parameter(id_param())
                .response("200", ok("The endpoint", Some("EndpointView")))
                .response("404", error("Not found")),
        );
        paths.add_path_operation(
            format!("/v1/{name}/{{id}}/endpoint"),
            vec![HttpMethod::Patch],
            OperationBuilder::new()
                .tag(name)
                .summary(Some(format!(
                    "Change the {kind}'s endpoint settings: event_types, ordered, enabled, success"
                )))
                .parameter(id_param())
                .request_body(body(
                    "EndpointPatch",
                    "{\"event_types\": [\"MEETING_ENDED\"], \"ordered\": true, \"success\": \"2xx\"}",
                ))
                .response("200", ok("The endpoint as changed", Some("EndpointView")))
                .response("404", error("Not found"))
                .response(
                    "422",
                    error("A field is invalid (the error names it), e.g. a type the level never receives"),
                ),
        );
    }
    paths.add_path_operation(
        "/v1/api-keys",
        vec![HttpMethod::Post],
        OperationBuilder::new()
            .tag("api-keys")
            .summary(Some(
                "Make a key bound to one level (operator only); the key is shown once",
            ))
            .request_body(body(
                "NewKey",
                "{\"level\": \"dealer\", \"id\": ..., \"label\": ...}",
            ))
            .response(
                "201",
                ok("The key, with `key` set this once", Some("KeyView")),
            )
            .response("403", error("Not the operator key"))
            .response("422", error("Invalid level or id")),
    );
    paths.add_path_operation(
        "/v1/api-keys",
        vec![HttpMethod::Get],
        OperationBuilder::new()
            .tag("api-keys")
            .summary(Some("List keys (never the keys themselves)"))
            .response("200", ok("{\"data\": [KeyView...]}", None)),
    );
    paths.add_path_operation(
        "/v1/api-keys/{id}",
        vec![HttpMethod::Delete],
        OperationBuilder::new()
            .tag("api-keys")
            .summary(Some("Revoke a key; it stops working at once"))
            .parameter(id_param())
            .response("204", ok("Revoked", None))
            .response("404", error("No such key, or already revoked")),
    );
    let components = ComponentsBuilder::new()
        .schema_from::<e::ResellerInput>()
        .schema_from::<e::DealerInput>()
        .schema_from::<e::CompanyInput>()
        .schema_from::<e::SiteInput>()
        .schema_from::<e::UserInput>()
        .schema_from::<e::MeetingInput>()
        .schema_from::<e::PackageInput>()
        .schema_from::<e::ResellerView>()
        .schema_from::<e::DealerView>()
        .schema_from::<e::CompanyView>()
        .schema_from::<e::SiteView>()
        .schema_from::<e::UserView>()
        .schema_from::<e::MeetingView>()
        .schema_from::<e::Package>()
        .schema_from::<WebhookView>()
        .schema_from::<EmailView>()
        .schema_from::<ErrorBody>()
        .schema_from::<RecoverRequest>()
        .schema_from::<SecretBody>()
        .schema_from::<NewKey>()
        .schema_from::<KeyView>()
        .schema_from::<EndpointView>()
        .schema_from::<EndpointPatch>()
        .schema_from::<HealthView>()
        .security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Tidings")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("Hierarchy-aware webhook delivery")),
        )
        .paths(paths)
        .components(Some(components))
        .security(Some([SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]))
        .build()
}
