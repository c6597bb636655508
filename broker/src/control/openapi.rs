//! The OpenAPI 3 document of the REST API, generated from the handlers' annotations and
//! served at `/api-docs`.

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::OpenApi;

use super::api;

/// The REST API's document.
#[derive(OpenApi)]
#[openapi(
    info(title = "broker REST API", description = "EMQX 5.1 compatible paths and shapes. Errors are JSON {code, message}."),
    paths(
        api::nodes, api::node, api::stats, api::metrics,
        api::clients, api::client, api::kick, api::client_subscriptions,
        api::subscribe, api::unsubscribe, api::subscriptions, api::topics,
        api::publish, api::publish_bulk, api::listeners,
        api::retained_list, api::retained_get, api::retained_delete,
        api::log_get, api::log_put,
    ),
    components(schemas(
        api::Meta, api::Node, api::Client, api::ClientPage, api::Sub,
        api::SubPage, api::SubscribeBody, api::Subscribed, api::UnsubscribeBody, api::Route,
        api::RoutePage, api::PublishProps, api::PublishBody, api::Published, api::Listener,
        api::RetainedMsg, api::RetainedPage, api::LogConsole, api::LogConfig,
    )),
    modifiers(&Unauthorized)
)]
pub(crate) struct ApiDoc;

/// Documents the 401 answer every operation behind credentials may give.
struct Unauthorized;

impl utoipa::Modify for Unauthorized {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let response = ResponseBuilder::new()
            .description("Missing or bad credentials")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Ref::from_schema_name("ErrorBody"))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for op in item.operations.values_mut() {
                op.responses
                    .responses
                    .entry("401".to_owned())
                    .or_insert_with(|| response.clone().into());
            }
        }
    }
}

/// The document as JSON.
pub(crate) fn document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::access::AccessDoc::openapi());
    doc.to_json().unwrap_or_else(|e| {
        format!(r#"{{"code":"INTERNAL_ERROR","message":"cannot render the document: {e}"}}"#)
    })
}

/// `GET /api-docs`.
pub(crate) async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}
