//! The OpenAPI 3.1 document of the API port (`GET /openapi.json`, committed as
//! `docs/openapi.json`), built from the route table.
//!
//! Every route of the port is in [`Route::ALL`]; each becomes one operation: its method and
//! path template, its summary and description (the table row's doc comment), its security
//! (the bearer scheme, with the route's scope) and the status codes that follow from what it
//! takes — a token (401, 403), path parameters (404), a body (400, 408, 413), a query (400) —
//! plus what [`doc`] says about it: query parameters, request body, success answer and any
//! other error. [`doc`] is one exhaustive `match`, so a route cannot be added undocumented.
//!
//! The schemas are the `ToSchema` types below. They mirror the JSON the handlers build (the
//! handlers render with `json!`), so they can drift; `tests/openapi.rs` sends a request to every
//! route and validates each answer against this document, unknown fields included, and fails
//! on any difference. They are never constructed, hence `dead_code` is allowed here.
//!
//! The document is deterministic (properties and paths in declaration order), so the
//! committed copy can be compared byte for byte; a unit test below does, and
//! `HERALD_WRITE_OPENAPI=1` (or `herald openapi > docs/openapi.json`) rewrites it.
#![allow(
    dead_code,
    reason = "schema types describe JSON built elsewhere; never constructed"
)]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, Content, InfoBuilder, LicenseBuilder, OpenApi, OpenApiBuilder, PathsBuilder,
    Ref, RefOr, Required, Tag,
};
use utoipa::{PartialSchema, ToSchema};

use super::query::{DEFAULT_LIMIT, MAX_LIMIT};
use super::response::{Resp, with_body};
use super::routes::{Access, Port, Route, param_names};

/// The name of the bearer security scheme.
const BEARER: &str = "bearer";

/// `GET /openapi.json`: the document, built once.
pub fn serve() -> Resp {
    static BODY: LazyLock<Bytes> = LazyLock::new(|| Bytes::from(to_json()));
    with_body(StatusCode::OK, BODY.clone(), "application/json")
}

/// The document as committed in `docs/openapi.json`: pretty JSON with a final newline.
pub fn to_json() -> String {
    match document().to_pretty_json() {
        Ok(mut text) => {
            text.push('\n');
            text
        }
        // Serialising utoipa's own types into a string cannot fail: no maps with non-string
        // keys, no I/O. Should it, the document says so instead of being half-written.
        Err(e) => format!("{{\"error\":\"the OpenAPI document did not serialise: {e}\"}}\n"),
    }
}

/// The OpenAPI document of every route of the API port.
pub fn document() -> OpenApi {
    let mut schemas = Schemas::default();
    let error = schemas.add::<ErrorBody>();
    let mut paths = PathsBuilder::new();
    let mut items: Vec<(&'static str, PathItem)> = Vec::new();
    for &route in Route::ALL {
        if !route.ports().includes(Port::Api) {
            continue;
        }
        let (method, operation) = operation(route, &mut schemas, &error);
        let item = PathItem::new(method, operation);
        match items.iter_mut().find(|(path, _)| *path == route.template()) {
            Some((_, existing)) => existing.merge_operations(item),
            None => items.push((route.template(), item)),
        }
    }
    for (path, item) in items {
        paths = paths.path(path, item);
    }
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas.0)
        .security_scheme(
            BEARER,
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <token>`, a token from `[api]` in the config. \
                         Each operation names the scope it needs; `admin` implies every scope.",
                    ))
                    .build(),
            ),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("herald API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(DESCRIPTION))
                .license(Some(
                    LicenseBuilder::new()
                        .name("Apache-2.0")
                        .identifier(Some("Apache-2.0"))
                        .build(),
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .tags(Some(TAGS.iter().map(|(name, about)| {
            let mut tag = Tag::new(*name);
            tag.description = Some((*about).to_owned());
            tag
        })))
        .build()
}

const DESCRIPTION: &str = "\
The private API port of herald: publish messages, manage destinations, the dead-letter queue, \
suppressions, preferences and data subjects, and watch the service.

**Authentication.** Every operation except the probes, `/metrics`, this document and the \
console needs `Authorization: Bearer <token>` (the scheme name in any case). A missing or \
unknown token is answered 401 `unauthorized`; a token without the operation's scope, 403 \
`forbidden`. Scopes: `read`, `write`, `publish`, `admin` (which implies the others).

**Errors.** Every error has the body `{\"error\": {\"code\": \"snake_case\", \"message\": \"…\"}}`. \
A path that is no route is 404 `not_found`; a route's path with another method, 405 \
`method_not_allowed` with an `Allow` header.

**Requests.** `HEAD` is answered wherever `GET` is. Bodies are JSON whatever the `Content-Type`; malformed JSON, an unknown, missing \
or ill-typed field, or a bad value is 400 `invalid_request`, its message naming the field. \
Timestamps are RFC 3339 in UTC.

**Pagination.** Lists answer `{\"items\": […], \"next\": \"…\" | null}`. Pass `next` back as \
`after` for the following page; `limit` is 50 by default, at most 1000.";

/// The tags, in the order a reader meets them.
const TAGS: &[(&str, &str)] = &[
    (
        "messages",
        "Published and received messages, with their deliveries.",
    ),
    ("destinations", "Where messages are delivered."),
    ("dlq", "Dead deliveries: inspect, retry, discard."),
    (
        "suppressions",
        "Recipients never to deliver to, per channel.",
    ),
    ("preferences", "What each recipient opted in to or out of."),
    (
        "subjects",
        "GDPR: export and erasure of everything about a recipient.",
    ),
    ("audit", "Who changed what, and when."),
    (
        "monitoring",
        "Latencies, budgets, alerts, the cache, storage.",
    ),
    ("operations", "Probes, metrics and this document; no token."),
    (
        "console",
        "The operator console: its files (no token), and who the signed-in token is.",
    ),
];

fn tag(route: Route) -> &'static str {
    let template = route.template();
    let resource = template
        .strip_prefix("/v1/")
        .and_then(|rest| rest.split('/').next());
    match resource {
        Some("cache" | "perf" | "alerts" | "storage") => "monitoring",
        Some("whoami") => "console",
        Some(resource) => TAGS
            .iter()
            .map(|(name, _)| *name)
            .find(|name| *name == resource)
            .unwrap_or("operations"),
        None if matches!(route, Route::Root | Route::ConsoleAsset) => "console",
        None => "operations",
    }
}

// ---- what each route takes and answers ---------------------------------------------------------

/// Adds a schema (and those it refers to) to the components and answers a reference to it.
type SchemaFn = fn(&mut Schemas) -> RefOr<Schema>;

#[derive(Default)]
struct Schemas(BTreeMap<String, RefOr<Schema>>);

impl Schemas {
    fn add<T: ToSchema>(&mut self) -> RefOr<Schema> {
        let mut referenced = Vec::new();
        T::schemas(&mut referenced);
        self.0.extend(referenced);
        self.0.insert(T::name().into_owned(), T::schema());
        Ref::from_schema_name(T::name()).into()
    }
}

fn of<T: ToSchema>(schemas: &mut Schemas) -> RefOr<Schema> {
    schemas.add::<T>()
}

/// The list envelope `{"items": [T…], "next": cursor | null}`.
fn page<T: ToSchema>(schemas: &mut Schemas) -> RefOr<Schema> {
    let item = schemas.add::<T>();
    ObjectBuilder::new()
        .property("items", ArrayBuilder::new().items(item))
        .required("items")
        .property(
            "next",
            ObjectBuilder::new()
                .schema_type(
                    [Type::String, Type::Null]
                        .into_iter()
                        .collect::<utoipa::openapi::schema::SchemaType>(),
                )
                .description(Some(
                    "The cursor of the following page, to pass as `after`; null on the last page.",
                )),
        )
        .required("next")
        .into()
}

/// What a route answers when it succeeds.
#[derive(Clone, Copy)]
enum Success {
    /// A JSON body.
    Json(u16, SchemaFn),
    /// No body (204).
    Empty,
    /// A body of this media type.
    Text(&'static str),
    /// A redirect (`Location`).
    Redirect(u16, &'static str),
    /// Any file, of the type its name says.
    Asset,
}

/// A query parameter: name, what it means, its schema.
type QueryParam = (&'static str, &'static str, fn() -> RefOr<Schema>);

struct Doc {
    query: Vec<QueryParam>,
    /// The request body, and whether it may be left out.
    body: Option<(SchemaFn, Required)>,
    success: Success,
    /// Errors beyond those implied by the token, parameters, query and body.
    errors: &'static [u16],
}

impl Doc {
    fn ok(success: Success) -> Self {
        Self {
            query: Vec::new(),
            body: None,
            success,
            errors: &[],
        }
    }

    fn json(status: u16, schema: SchemaFn) -> Self {
        Self::ok(Success::Json(status, schema))
    }

    fn body(mut self, schema: SchemaFn) -> Self {
        self.body = Some((schema, Required::True));
        self
    }

    fn optional_body(mut self, schema: SchemaFn) -> Self {
        self.body = Some((schema, Required::False));
        self
    }

    fn query(mut self, params: &[QueryParam]) -> Self {
        self.query.extend_from_slice(params);
        self
    }

    /// `limit` and `after`, then `filters`.
    fn paged(self, filters: &[QueryParam]) -> Self {
        self.query(&[
            (
                "limit",
                "Items per page: 1 to 1000, default 50 (more is capped to 1000).",
                limit,
            ),
            ("after", "The previous page's `next`.", string),
        ])
        .query(filters)
    }

    fn errors(mut self, errors: &'static [u16]) -> Self {
        self.errors = errors;
        self
    }
}

fn string() -> RefOr<Schema> {
    String::schema()
}

fn date_time() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .into()
}

fn limit() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(MAX_LIMIT as u64))
        .default(Some(DEFAULT_LIMIT.into()))
        .into()
}

fn delivery_status() -> RefOr<Schema> {
    DeliveryStatus::schema()
}

fn alert_state() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["active"]))
        .into()
}

fn channel() -> RefOr<Schema> {
    Channel::schema()
}

/// What `route` takes and answers, beyond what its table row implies.
#[allow(
    clippy::too_many_lines,
    clippy::match_same_arms,
    reason = "one arm per route, in the route table's order"
)]
fn doc(route: Route) -> Doc {
    match route {
        Route::Healthz => Doc::json(200, of::<Status>),
        Route::Readyz => Doc::json(200, of::<Status>).errors(&[503]),
        Route::Metrics => Doc::ok(Success::Text(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )),
        Route::OpenApi => Doc::ok(Success::Text("application/json")),
        Route::Root => Doc::ok(Success::Redirect(303, "/console/")),
        Route::ConsoleAsset => Doc::ok(Success::Asset),
        Route::WhoAmI => Doc::json(200, of::<WhoAmI>),

        Route::ListMessages => Doc::json(200, page::<MessageSummary>).paged(&[
            (
                "status",
                "Only messages with a delivery in this status.",
                delivery_status,
            ),
            ("source", "Only messages from this source.", string),
            ("event_type", "Only messages of this event type.", string),
        ]),
        Route::PublishMessage => Doc::json(202, of::<Published>).body(of::<PublishRequest>),
        Route::GetMessage => Doc::json(200, of::<Message>),
        Route::ResendMessage => Doc::json(202, of::<Resent>).optional_body(of::<ResendRequest>),

        Route::ListDestinations => Doc::json(200, page::<Destination>),
        Route::CreateDestination => Doc::json(201, of::<Destination>)
            .body(of::<CreateDestination>)
            .errors(&[409]),
        Route::GetDestination => Doc::json(200, of::<Destination>),
        Route::UpdateDestination => Doc::json(200, of::<Destination>).body(of::<UpdateDestination>),
        Route::DeleteDestination => Doc::ok(Success::Empty),
        Route::RotateSecret => {
            Doc::json(200, of::<RotatedSecret>).optional_body(of::<RotateSecret>)
        }

        Route::ListDeadLetters => Doc::json(200, page::<DeadLetter>).paged(&[
            (
                "destination",
                "Only dead deliveries to this destination.",
                string,
            ),
            (
                "since",
                "Only deliveries that died at or after this time (RFC 3339).",
                date_time,
            ),
        ]),
        Route::RetryDeadLetters => {
            Doc::json(200, of::<Requeued>).optional_body(of::<RetryDeadLetters>)
        }
        Route::GetDeadLetter => Doc::json(200, of::<DeadLetter>),
        Route::DiscardDeadLetter => Doc::ok(Success::Empty),
        Route::RetryDeadLetter => Doc::json(200, of::<RetriedDeadLetter>),

        Route::ListSuppressions => Doc::json(200, page::<Suppression>).paged(&[
            ("recipient", "Only suppressions of this recipient.", string),
            (
                "channel",
                "Only suppressions on this channel (or `*`).",
                string,
            ),
        ]),
        Route::CreateSuppression => Doc::json(201, of::<Suppression>).body(of::<NewSuppression>),
        Route::BulkSuppress => Doc::json(201, of::<BulkSuppressed>).body(of::<BulkSuppress>),
        Route::DeleteSuppression => Doc::ok(Success::Empty),
        Route::GetPreferences => Doc::json(200, of::<Preferences>),
        Route::PutPreferences => Doc::json(200, of::<Preferences>).body(of::<NewPreferences>),
        Route::ResetPreferences => Doc::ok(Success::Empty),
        Route::OptOut | Route::OptIn => Doc::json(200, of::<Preferences>).body(of::<Opt>),

        Route::ExportSubject => Doc::json(200, of::<SubjectExport>),
        Route::EraseSubject => Doc::ok(Success::Empty),
        Route::ListAudit => Doc::json(200, page::<AuditEntry>).paged(&[
            (
                "subject",
                "Only entries about this subject (a recipient, destination, DLQ id or pseudonym).",
                string,
            ),
            ("actor", "Only entries made by this token name.", string),
        ]),

        Route::CacheStats => Doc::json(200, of::<CacheStats>),
        Route::InvalidateCache => Doc::json(200, of::<Invalidated>).body(of::<InvalidateCache>),
        Route::Perf => Doc::json(200, of::<PerfReport>),
        Route::ListAlerts => Doc::json(200, page::<Alert>).query(&[(
            "state",
            "`active`: only alerts not yet resolved.",
            alert_state,
        )]),
        Route::Storage => Doc::json(200, of::<StorageReport>),
        Route::RunMaintenance => Doc::json(200, of::<MaintenanceReport>),

        // The ingest port's routes are not in this document.
        Route::Webhook | Route::Vitals | Route::VitalsPreflight => Doc::ok(Success::Empty),
    }
}

/// What each error status means, wherever it is answered.
fn error_description(status: u16) -> &'static str {
    match status {
        400 => {
            "`invalid_request`: malformed JSON, an unknown, missing or ill-typed field, or a bad \
             value (the message names the field); `destination_not_allowed`: a destination URL \
             the SSRF guard refuses; `bad_body`: the body could not be read"
        }
        401 => "`unauthorized`: no `Authorization: Bearer` header, or an unknown token",
        403 => "`forbidden`: the token lacks this operation's scope",
        404 => "`not_found`: no such resource",
        408 => "`request_timeout`: the body was not received in time",
        409 => "`conflict`: a resource of that name exists",
        413 => "`payload_too_large`: the body exceeds `server.max_body_bytes`",
        503 => {
            "`unavailable` or `not_ready`: storage or a service actor is busy or restarting; retry"
        }
        _ => "an error",
    }
}

fn operation(
    route: Route,
    schemas: &mut Schemas,
    error: &RefOr<Schema>,
) -> (HttpMethod, utoipa::openapi::path::Operation) {
    let d = doc(route);
    let lines: Vec<&str> = route.doc().iter().map(|l| l.trim()).collect();
    let summary = lines.first().copied().unwrap_or_default();
    let mut description = lines
        .get(1..)
        .unwrap_or_default()
        .join("\n")
        .trim()
        .to_owned();
    let mut op = OperationBuilder::new()
        .operation_id(Some(operation_id(route)))
        .summary(Some(summary))
        .tag(tag(route));

    let mut errors: Vec<u16> = Vec::new();
    match route.access() {
        Access::Public => {
            if !description.is_empty() {
                description.push_str("\n\n");
            }
            description.push_str("No token needed.");
        }
        Access::Authenticated => {
            if !description.is_empty() {
                description.push_str("\n\n");
            }
            description.push_str("Any valid token, whatever its scopes.");
            op = op.security(SecurityRequirement::new(BEARER, Vec::<String>::new()));
            errors.push(401);
        }
        Access::Token(scope) => {
            if !description.is_empty() {
                description.push_str("\n\n");
            }
            description.push_str("Scope: `");
            description.push_str(scope.as_str());
            description.push_str("`.");
            op = op.security(SecurityRequirement::new(BEARER, [scope.as_str()]));
            errors.extend([401, 403, 503]);
        }
    }
    op = op.description(Some(description));

    for name in param_names(route.template()) {
        op = op.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(path_param(route, name)))
                .schema(Some(String::schema())),
        );
    }
    if param_names(route.template()).next().is_some() && route != Route::ConsoleAsset {
        errors.push(404);
    }
    for (name, about, schema) in &d.query {
        op = op.parameter(
            ParameterBuilder::new()
                .name(*name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(*about))
                .schema(Some(schema())),
        );
    }
    if !d.query.is_empty() {
        errors.push(400);
    }
    if let Some((body, required)) = d.body {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .description(Some(match required {
                    Required::True => "JSON, whatever the `Content-Type`.",
                    Required::False => "JSON, whatever the `Content-Type`; may be empty.",
                }))
                .required(Some(required))
                .content("application/json", Content::new(Some(body(schemas))))
                .build(),
        ));
        errors.extend([400, 408, 413]);
    }
    errors.extend(d.errors);

    op = with_success(op, d.success, schemas);
    errors.sort_unstable();
    errors.dedup();
    for status in errors {
        op = op.response(
            status.to_string(),
            ResponseBuilder::new()
                .description(error_description(status))
                .content("application/json", Content::new(Some(error.clone()))),
        );
    }
    (http_method(&route.method()), op.build())
}

/// `op` with its success answers.
fn with_success(op: OperationBuilder, success: Success, schemas: &mut Schemas) -> OperationBuilder {
    match success {
        Success::Json(status, schema) => op.response(
            status.to_string(),
            ResponseBuilder::new()
                .description(success_description(status))
                .content("application/json", Content::new(Some(schema(schemas)))),
        ),
        Success::Empty => op.response("204", ResponseBuilder::new().description("Done.")),
        Success::Text(media) => op.response(
            "200",
            ResponseBuilder::new()
                .description("OK.")
                .content(media, Content::new(None::<RefOr<Schema>>)),
        ),
        Success::Redirect(status, to) => op.response(status.to_string(), redirect(to)),
        // A file server's answers: a missing file is a plain-text 404, for the browser.
        Success::Asset => op
            .response(
                "200",
                ResponseBuilder::new()
                    .description("The file, with its content type (`text/html` for the page).")
                    .content("*/*", Content::new(None::<RefOr<Schema>>)),
            )
            .response("303", redirect("/console/"))
            .response(
                "304",
                ResponseBuilder::new().description("Not modified (`If-None-Match` and `ETag`)."),
            )
            .response(
                "404",
                ResponseBuilder::new()
                    .description("No such file.")
                    .content("text/plain", Content::new(None::<RefOr<Schema>>)),
            ),
    }
}

fn redirect(to: &'static str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(format!("A redirect to `{to}`."))
        .header(
            "Location",
            HeaderBuilder::new()
                .schema(Some(String::schema()))
                .description(Some(to))
                .build(),
        )
}

fn success_description(status: u16) -> &'static str {
    match status {
        201 => "Created.",
        202 => "Accepted: durably stored.",
        _ => "OK.",
    }
}

fn path_param(route: Route, name: &str) -> &'static str {
    match (route, name) {
        (Route::ConsoleAsset, _) => "A file under `/console/`; may contain `/`.",
        (_, "name") => "The destination's name.",
        (_, "recipient") => {
            "The recipient, percent-encoded (`@` as `%40`); whitespace, Unicode form and an \
             email address's case do not matter."
        }
        (_, "channel") => "`webhook`, `email`, `sms`, `push`, `in_app`, or `*`.",
        (Route::GetDeadLetter | Route::DiscardDeadLetter | Route::RetryDeadLetter, _) => {
            "The dead delivery's id, `{message id}.{destination}`."
        }
        (_, "id") => "The message id (`msg_…`).",
        _ => "",
    }
}

/// `ListMessages` → `listMessages`.
fn operation_id(route: Route) -> String {
    let name = route.name();
    let mut chars = name.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_ascii_lowercase().to_string() + chars.as_str()
    })
}

fn http_method(method: &http::Method) -> HttpMethod {
    match *method {
        http::Method::POST => HttpMethod::Post,
        http::Method::PUT => HttpMethod::Put,
        http::Method::PATCH => HttpMethod::Patch,
        http::Method::DELETE => HttpMethod::Delete,
        http::Method::OPTIONS => HttpMethod::Options,
        http::Method::HEAD => HttpMethod::Head,
        _ => HttpMethod::Get,
    }
}

// ---- schemas: the JSON the handlers read and write ---------------------------------------------

/// Every error: `{"error": {"code", "message"}}`.
#[derive(ToSchema)]
#[schema(as = Error)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(ToSchema)]
struct ErrorDetail {
    /// A stable `snake_case` code: `invalid_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `method_not_allowed`, `payload_too_large`, `request_timeout`, `unavailable`…
    code: String,
    /// What went wrong, for a person; for `invalid_request` it starts with the field at fault.
    message: String,
}

/// A probe's answer.
#[derive(ToSchema)]
struct Status {
    /// `ok` (healthz) or `ready` (readyz).
    status: String,
}

/// A delivery channel; suppressions and preferences apply per channel.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
enum Channel {
    Webhook,
    Email,
    Sms,
    Push,
    InApp,
}

/// Where one (message, destination) delivery stands.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
enum DeliveryStatus {
    Pending,
    Succeeded,
    Retrying,
    Dead,
    Suppressed,
}

/// What a token may do.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
enum ScopeName {
    Read,
    Write,
    Publish,
    Admin,
}

/// Who is calling.
#[derive(ToSchema)]
struct WhoAmI {
    /// The token's name, as the audit trail records it.
    name: String,
    scopes: Vec<ScopeName>,
}

// -- messages

/// A message to publish.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    /// Matched against destinations' `event_types` globs.
    event_type: String,
    /// Any JSON: the body delivered, byte for byte as serialised here.
    #[schema(value_type = Value)]
    payload: Value,
    /// Who the message is for; suppressions and preferences apply to them.
    recipient: Option<String>,
    channel: Option<Channel>,
    /// A preference category (`marketing`, …).
    category: Option<String>,
    /// A repeat of a key answers the first message's id with `duplicate: true`.
    idempotency_key: Option<String>,
}

#[derive(ToSchema)]
struct Published {
    /// The message id, `msg_…`; also the `webhook-id` of every delivery.
    id: String,
    /// `accepted`.
    status: String,
    /// Whether `idempotency_key` named an earlier message (whose id this is).
    duplicate: bool,
}

/// Where to deliver a message again.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
struct ResendRequest {
    /// Only to this destination; by default to every destination the message matched.
    destination: Option<String>,
}

#[derive(ToSchema)]
struct Resent {
    /// The message id.
    id: String,
    /// How many deliveries were re-queued (none to a suppressed recipient).
    requeued: u64,
}

#[derive(ToSchema)]
struct Requeued {
    /// How many deliveries were re-queued.
    requeued: u64,
}

/// A message as lists show it.
#[derive(ToSchema)]
struct MessageSummary {
    id: String,
    /// The source it came in through; null for messages published through the API.
    source: Option<String>,
    /// The partner's id (webhook id, Stripe event id…) or the publisher's idempotency key.
    external_id: Option<String>,
    event_type: Option<String>,
    content_type: Option<String>,
    recipient: Option<String>,
    channel: Option<String>,
    category: Option<String>,
    #[schema(format = DateTime)]
    received_at: String,
    body_bytes: u64,
    deliveries: Vec<Delivery>,
}

/// A message with its body.
#[derive(ToSchema)]
struct Message {
    #[serde(flatten)]
    summary: MessageSummary,
    /// The body, when it is JSON.
    #[schema(value_type = Value, required = false)]
    payload: Option<Value>,
    /// The body's exact bytes in base64, when it is not JSON.
    body_base64: Option<String>,
}

/// One (message, destination) delivery.
#[derive(ToSchema)]
struct Delivery {
    destination: String,
    status: DeliveryStatus,
    /// Every attempt, oldest first (a DLQ retry adds to them).
    attempts: Vec<Attempt>,
    /// When the next attempt is due; null once the delivery is final.
    #[schema(format = DateTime)]
    next_attempt_at: Option<String>,
    /// Why it is suppressed, or why it died without an attempt.
    reason: Option<String>,
}

#[derive(ToSchema)]
struct Attempt {
    #[schema(format = DateTime)]
    at: String,
    /// The receiver's status code; null when there was no answer.
    status_code: Option<u16>,
    /// Why it failed: the connection, TLS, a timeout, or the status.
    error: Option<String>,
    duration_ms: u64,
    /// The start of the receiver's answer (at most 4 KiB).
    response_body: Option<String>,
}

// -- destinations

/// The state of a destination's circuit breaker.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(ToSchema)]
struct Circuit {
    state: CircuitState,
    consecutive_failures: u32,
    #[schema(format = DateTime)]
    opened_at: Option<String>,
}

#[derive(ToSchema)]
struct Destination {
    name: String,
    url: String,
    /// Source names, or `*`: every source and published messages.
    sources: Vec<String>,
    /// Globs on the event type; empty = every event type.
    event_types: Vec<String>,
    channel: Channel,
    rate_limit_per_sec: Option<u32>,
    enabled: bool,
    /// Why it was disabled (a 410 from the receiver), if it was.
    disabled_reason: Option<String>,
    /// Declared in the config file (re-applied at each start).
    from_config: bool,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    /// This destination's own per-attempt timeout, overriding `[delivery]`, if set.
    timeout_ms: Option<u64>,
    /// This destination's own attempts before the DLQ, if set.
    max_attempts: Option<u32>,
    /// This destination's own backoff base, if set.
    backoff_base_ms: Option<u64>,
    /// This destination's own backoff cap, if set.
    backoff_max_ms: Option<u64>,
    /// Static headers sent on every attempt.
    headers: std::collections::BTreeMap<String, String>,
    /// Until when each previous secret still signs too, newest first.
    #[schema(value_type = Vec<String>)]
    previous_secrets_valid_until: Vec<String>,
    circuit: Circuit,
    /// Deliveries waiting (`GET /v1/destinations/{name}` only).
    queued: Option<u64>,
    /// The signing secret, `whsec_…`: in the answer to its creation only.
    secret: Option<String>,
}

/// A new destination.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateDestination {
    /// 1 to 64 of `a-z`, `0-9`, `_`, `-`.
    name: String,
    /// `http://` or `https://`; private addresses are refused unless the config allows them.
    url: String,
    /// Default `["*"]`.
    sources: Option<Vec<String>>,
    /// Default: every event type.
    event_types: Option<Vec<String>>,
    /// Default `webhook`.
    channel: Option<Channel>,
    /// `whsec_<base64>`; generated when absent.
    secret: Option<String>,
    rate_limit_per_sec: Option<u32>,
    /// Default true.
    enabled: Option<bool>,
    /// Per-attempt timeout overriding `[delivery]`; null removes the override.
    timeout_ms: Option<u64>,
    /// Attempts before the DLQ overriding `[delivery]`; null removes the override.
    max_attempts: Option<u32>,
    /// Backoff base overriding `[delivery]`; null removes the override.
    backoff_base_ms: Option<u64>,
    /// Backoff cap overriding `[delivery]`; null removes the override.
    backoff_max_ms: Option<u64>,
    /// Static headers on every attempt; `webhook-*`, `content-type`, `content-length` and
    /// `host` cannot be set.
    headers: Option<std::collections::BTreeMap<String, String>>,
}

/// Changes to a destination: absent fields are kept.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateDestination {
    url: Option<String>,
    sources: Option<Vec<String>>,
    event_types: Option<Vec<String>>,
    channel: Option<Channel>,
    /// null removes the limit.
    rate_limit_per_sec: Option<u32>,
    enabled: Option<bool>,
    /// Per-attempt timeout overriding `[delivery]`; null removes the override.
    timeout_ms: Option<u64>,
    /// Attempts before the DLQ overriding `[delivery]`; null removes the override.
    max_attempts: Option<u32>,
    /// Backoff base overriding `[delivery]`; null removes the override.
    backoff_base_ms: Option<u64>,
    /// Backoff cap overriding `[delivery]`; null removes the override.
    backoff_max_ms: Option<u64>,
    /// Static headers on every attempt; `webhook-*`, `content-type`, `content-length` and
    /// `host` cannot be set.
    headers: Option<std::collections::BTreeMap<String, String>>,
}

/// How to rotate a destination's secret.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateSecret {
    /// How long the previous secret keeps signing too; default 86400.
    grace_secs: Option<u64>,
}

#[derive(ToSchema)]
struct RotatedSecret {
    /// The new secret, `whsec_…`: shown here only.
    secret: String,
    #[schema(format = DateTime)]
    previous_secret_valid_until: Option<String>,
    /// Until when each previous secret still signs too, newest first.
    #[schema(value_type = Vec<String>)]
    previous_secrets_valid_until: Vec<String>,
}

// -- DLQ

#[derive(ToSchema)]
struct DeadLetter {
    /// `{message id}.{destination}`.
    id: String,
    message_id: String,
    destination: String,
    #[schema(format = DateTime)]
    dead_at: String,
    /// Why it died without an attempt (its destination was deleted), if so.
    reason: Option<String>,
    source: Option<String>,
    event_type: Option<String>,
    attempts: Vec<Attempt>,
}

/// Which dead deliveries to re-queue; all when empty.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
struct RetryDeadLetters {
    /// Only this destination's.
    destination: Option<String>,
    /// Only deliveries that died at or after this time.
    #[schema(format = DateTime)]
    since: Option<String>,
}

#[derive(ToSchema)]
struct RetriedDeadLetter {
    id: String,
    /// `pending`.
    status: String,
    /// 1.
    requeued: u64,
}

// -- suppressions, preferences

/// Why a recipient is suppressed.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
enum Reason {
    UserRequest,
    Bounce,
    Complaint,
    AdminAction,
}

/// A suppression to add.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
struct NewSuppression {
    recipient: String,
    /// A channel, or `*` for every channel.
    channel: String,
    reason: Reason,
    /// When it stops applying; never when absent.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    note: Option<String>,
}

#[derive(ToSchema)]
struct Suppression {
    /// The canonical form: trimmed, NFC, an email address lower-cased.
    recipient: String,
    channel: String,
    reason: Reason,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    note: Option<String>,
    /// The token name that made it.
    created_by: String,
    #[schema(format = DateTime)]
    created_at: String,
}

/// Suppressions to add, all or nothing.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
struct BulkSuppress {
    /// At most 10,000.
    items: Vec<NewSuppression>,
}

#[derive(ToSchema)]
struct BulkSuppressed {
    created: u64,
}

/// A recipient's preferences, replacing what is stored.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
struct NewPreferences {
    /// Channel → allowed.
    #[serde(default)]
    channels: BTreeMap<String, bool>,
    /// Category → channel → allowed.
    #[serde(default)]
    categories: BTreeMap<String, BTreeMap<String, bool>>,
}

#[derive(ToSchema)]
struct Preferences {
    recipient: String,
    /// Channel → allowed; a channel not listed is allowed.
    channels: BTreeMap<String, bool>,
    /// Category → channel → allowed.
    categories: BTreeMap<String, BTreeMap<String, bool>>,
}

/// A channel, or a category on a channel, to opt out of or in to.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
struct Opt {
    channel: Channel,
    /// Only this category on the channel.
    category: Option<String>,
}

// -- subjects, audit

/// Everything held about one recipient.
#[derive(ToSchema)]
struct SubjectExport {
    recipient: String,
    #[schema(format = DateTime)]
    exported_at: String,
    preferences: Preferences,
    suppressions: Vec<Suppression>,
    audit: Vec<AuditEntry>,
    messages: Vec<Message>,
}

#[derive(ToSchema)]
struct AuditEntry {
    /// `aud_…`.
    id: String,
    #[schema(format = DateTime)]
    at: String,
    /// The token name that made the change.
    actor: String,
    /// `suppression.create`, `destination.update`, `dlq.retry`, `subject.erase`, …
    action: String,
    /// A recipient, a destination, a DLQ id, a pseudonym or `*`.
    subject: String,
    #[schema(value_type = Value)]
    before: Option<Value>,
    #[schema(value_type = Value)]
    after: Option<Value>,
}

// -- monitoring

#[derive(ToSchema)]
struct CacheStats {
    hits: u64,
    misses: u64,
    loads: u64,
    /// Misses that waited for another caller's load instead of loading.
    coalesced: u64,
    evictions: u64,
    entries: u64,
    hit_rate: f64,
}

/// Which cache entries to drop.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
struct InvalidateCache {
    /// A glob over cache keys; `*` = all.
    pattern: String,
}

#[derive(ToSchema)]
struct Invalidated {
    pattern: String,
    /// Entries dropped.
    invalidated: u64,
}

#[derive(ToSchema)]
struct PerfReport {
    /// The node these figures are from, `server.node_name`: each node measures itself.
    node: String,
    routes: Vec<RouteLatency>,
    vitals: Vec<VitalP75>,
    budgets: Vec<Budget>,
    storage: CommitTimings,
}

#[derive(ToSchema)]
struct RouteLatency {
    /// `ingest` or `api`.
    port: String,
    /// `METHOD /template`, or `other`.
    route: String,
    /// `2xx`, `4xx`, …
    status_class: String,
    count: u64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
}

/// A Core Web Vital.
#[derive(ToSchema)]
#[schema(rename_all = "UPPERCASE")]
enum Vital {
    Lcp,
    Inp,
    Cls,
    Fcp,
    Ttfb,
}

#[derive(ToSchema)]
struct VitalP75 {
    page: String,
    metric: Vital,
    p75: f64,
    samples: u64,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
enum BudgetState {
    Ok,
    AtRisk,
    Violated,
    NoData,
}

#[derive(ToSchema)]
struct Budget {
    /// `LCP`, … or `route:METHOD /template`.
    metric: String,
    page: Option<String>,
    p75_max: f64,
    p75: Option<f64>,
    samples: u64,
    state: BudgetState,
}

#[derive(ToSchema)]
struct CommitTimings {
    commits: u64,
    slow_commits: u64,
    slow_threshold_ms: u64,
    /// The latest slow commits, newest first: `[at_ms, took_ms, jobs]`.
    recent_slow: Vec<Vec<u64>>,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(ToSchema)]
struct Alert {
    /// `budget_violated`, `circuit_open`, `destination_disabled`, `dlq_depth`,
    /// `client_blocked`, `stale_timestamps`, `cache_miss_rate`, `slow_storage`, …
    kind: String,
    severity: Severity,
    /// What it is about: a destination, a budget, a client address…
    subject: String,
    #[schema(format = DateTime)]
    started_at: String,
    /// null while the alert is active.
    #[schema(format = DateTime)]
    resolved_at: Option<String>,
    detail: String,
    /// The node that raised it, `server.node_name`: each node judges its own conditions.
    node: String,
}

#[derive(ToSchema)]
struct StorageReport {
    stats: StorageStats,
    /// The last maintenance run's index checks; null until one ran since the start
    /// (`POST /v1/storage/maintenance` runs one now).
    indexes: Option<Vec<IndexHealth>>,
    /// The last maintenance run's report; null until one ran since the start.
    last_maintenance: Option<MaintenanceReport>,
    commits: Option<CommitTimings>,
}

#[derive(ToSchema)]
struct StorageStats {
    schema_version: u64,
    /// The database file's size; it does not shrink when data is deleted.
    file_bytes: u64,
    tables: Vec<TableInfo>,
}

#[derive(ToSchema)]
struct TableInfo {
    name: String,
    entries: u64,
    /// For a secondary index, the table it is derived from.
    index_of: Option<String>,
}

/// A secondary index compared with its primary table.
#[derive(ToSchema)]
struct IndexHealth {
    index: String,
    primary: String,
    expected: u64,
    actual: u64,
    missing: u64,
    extra: u64,
    rebuilt: bool,
}

#[derive(ToSchema)]
struct MaintenanceReport {
    indexes: Vec<IndexHealth>,
    /// redb's integrity check; null when it could not run online.
    integrity: Option<bool>,
    integrity_note: Option<String>,
    compacted: bool,
    compaction_note: Option<String>,
    took_ms: u64,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `docs/openapi.json` is this document, byte for byte.
    #[test]
    fn the_committed_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        let generated = to_json();
        if std::env::var_os("HERALD_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json differs from the document the code generates; regenerate it with\n\
             \n    HERALD_WRITE_OPENAPI=1 cargo test -p herald --lib openapi\n\
             \nor `cargo run -- openapi > docs/openapi.json`, and commit it"
        );
    }

    /// What every operation must say: its scope (security and description) and 401/403 when
    /// it takes a token, 404 when it has path parameters, 400/413 when it takes a body or a
    /// query; and every error answer has the error body.
    #[test]
    fn every_operation_documents_its_errors_and_scope() {
        let doc: Value = serde_json::from_str(&to_json()).unwrap();
        let error = serde_json::json!({"$ref": "#/components/schemas/Error"});
        for &route in Route::ALL.iter().filter(|r| r.ports().includes(Port::Api)) {
            let op = &doc["paths"][route.template()][route.method().as_str().to_lowercase()];
            let responses = op["responses"].as_object().unwrap();
            let has = |status: &str| responses.contains_key(status);
            let label = route.label();
            match route.access() {
                Access::Token(scope) => {
                    assert_eq!(
                        op["security"],
                        serde_json::json!([{BEARER: [scope.as_str()]}])
                    );
                    let description = op["description"].as_str().unwrap();
                    assert!(
                        description.contains(&format!("Scope: `{scope}`")),
                        "{label}"
                    );
                    assert!(has("401") && has("403"), "{label}");
                }
                Access::Authenticated => {
                    assert_eq!(op["security"], serde_json::json!([{BEARER: []}]), "{label}");
                    assert!(has("401"), "{label}");
                }
                Access::Public => assert!(op.get("security").is_none(), "{label}"),
            }
            if param_names(route.template()).next().is_some() {
                assert!(has("404"), "{label}");
            }
            // The console's files are a file server's: a missing one is a plain-text 404.
            let error_body = route != Route::ConsoleAsset;
            if op.get("requestBody").is_some() {
                assert!(has("400") && has("413"), "{label}");
            }
            if op
                .get("parameters")
                .is_some_and(|p| p.as_array().unwrap().iter().any(|p| p["in"] == "query"))
            {
                assert!(has("400"), "{label}");
            }
            let mut successes = 0;
            for (status, response) in responses {
                if error_body && (status.starts_with('4') || status.starts_with('5')) {
                    assert_eq!(
                        response["content"]["application/json"]["schema"], error,
                        "{label} {status}"
                    );
                } else {
                    successes += 1;
                }
            }
            assert!(successes >= 1, "{label} documents no success");
        }
    }

    /// `docs/api.md` names every route of the port, as `METHOD /template`.
    #[test]
    fn the_api_guide_names_every_route() {
        let guide = include_str!("../../docs/api.md");
        for route in Route::ALL.iter().filter(|r| r.ports().includes(Port::Api)) {
            let name = format!("`{} {}`", route.method(), route.template());
            assert!(guide.contains(&name), "docs/api.md does not mention {name}");
        }
    }

    #[test]
    fn every_api_route_is_an_operation_and_nothing_else_is() {
        let doc: Value = serde_json::from_str(&to_json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.push(format!("{} {path}", method.to_uppercase()));
            }
        }
        let served: Vec<String> = Route::ALL
            .iter()
            .filter(|r| r.ports().includes(Port::Api))
            .map(|r| format!("{} {}", r.method(), r.template()))
            .collect();
        documented.sort();
        let mut sorted = served.clone();
        sorted.sort();
        assert_eq!(documented, sorted);
    }
}
