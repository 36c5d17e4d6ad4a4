//! The route table against the served OpenAPI document, end to end.
//!
//! Every route of the API port ([`Route::ALL`]) gets a real request, with the token that has
//! exactly its scope; each answer's status must be one the document lists for that operation,
//! and each JSON body must validate against the documented schema, where a property the
//! schema does not list is an error (so the mirror types in `src/http/openapi.rs` cannot fall
//! behind the handlers). Tokens without the scope are refused 403 on every route, no token
//! 401; paths that are no route are 404, other methods 405, all with the error body.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::receiver::Receiver;
use common::{ADMIN_TOKEN, Server, fast_delivery};
use herald::config::Scope;
use herald::http::routes::{Access, Port, Route};
use reqwest::Method;
use serde_json::{Value, json};

/// `write` has no token in the common config; this one has just that scope.
const TOKENS: &str = r#"
[[api.tokens]]
name = "writer"
token = "test-writer-token"
scopes = ["write"]

[[api.tokens]]
name = "operator"
token = "test-operator-token"
scopes = ["admin"]
"#;

fn token_with(scope: Scope) -> &'static str {
    match scope {
        Scope::Read => "test-reader-token",
        Scope::Write => "test-writer-token",
        Scope::Publish => "test-publisher-token",
        Scope::Admin => "test-operator-token",
    }
}

/// A token that lacks `scope` (none has `admin`'s implications but the admin).
fn token_without(scope: Scope) -> &'static str {
    match scope {
        Scope::Read => "test-publisher-token",
        _ => "test-reader-token",
    }
}

struct Fixture {
    server: Server,
    _receiver: Receiver,
    message: String,
    dead: Vec<String>,
    http: reqwest::Client,
}

const RECIPIENT: &str = "carol@example.com";

async fn fixture() -> Fixture {
    let receiver = Receiver::start().await;
    let config = format!(
        "{TOKENS}\n{}\n[circuit_breaker]\nfailure_threshold = 2\nopen_ms = 60000\n\n\
         [[destinations]]\nname = \"hooks\"\nurl = \"{}\"\nsources = [\"*\"]\n\
         secret = \"{}\"\n\n\
         [[destinations]]\nname = \"down\"\nurl = \"http://127.0.0.1:9/hooks\"\n\
         sources = [\"std\"]\nsecret = \"{}\"\n",
        fast_delivery(1),
        receiver.url("/hooks"),
        common::STD_SECRET,
        common::STD_SECRET,
    );
    let server = Server::start(&config).await;
    let message = server
        .accept_std("evt_a", br#"{"type":"order.created","n":1}"#)
        .await;
    let recipient_message = server
        .accept_std(
            "evt_b",
            format!(r#"{{"type":"mail.sent","recipient":"{RECIPIENT}","channel":"email"}}"#)
                .as_bytes(),
        )
        .await;
    // `down` refuses connections: with one attempt each, both deliveries to it die. `hooks`
    // takes them.
    let mut dead = Vec::new();
    for id in [&message, &recipient_message] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (_, msg) = server
                .api_get(&format!("/v1/messages/{id}"), ADMIN_TOKEN)
                .await;
            let status = |dest: &str| {
                msg["deliveries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|d| d["destination"] == dest)
                    .map(|d| d["status"].as_str().unwrap_or_default().to_owned())
            };
            if status("down").as_deref() == Some("dead")
                && status("hooks").as_deref() == Some("succeeded")
            {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{msg}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        dead.push(format!("{id}.down"));
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Fixture {
        server,
        _receiver: receiver,
        message,
        dead,
        http,
    }
}

/// The concrete request for `route`: its path and body.
fn request(route: Route, f: &Fixture) -> (String, Option<Value>) {
    let recipient = "carol%40example.com";
    let path = match route {
        Route::GetMessage | Route::ResendMessage => {
            format!("/v1/messages/{}", f.message) + route_suffix(route)
        }
        Route::GetDestination
        | Route::UpdateDestination
        | Route::DeleteDestination
        | Route::RotateSecret => format!("/v1/destinations/created{}", route_suffix(route)),
        Route::GetDeadLetter | Route::DiscardDeadLetter => format!("/v1/dlq/{}", f.dead[1]),
        Route::RetryDeadLetter => format!("/v1/dlq/{}/retry", f.dead[0]),
        Route::DeleteSuppression => "/v1/suppressions/dave%40example.com/email".to_owned(),
        Route::GetPreferences | Route::PutPreferences | Route::ResetPreferences => {
            format!("/v1/preferences/{recipient}")
        }
        Route::OptOut => format!("/v1/preferences/{recipient}/opt-out"),
        Route::OptIn => format!("/v1/preferences/{recipient}/opt-in"),
        Route::ExportSubject => format!("/v1/subjects/{recipient}/export"),
        Route::EraseSubject => format!("/v1/subjects/{recipient}"),
        Route::ConsoleAsset => "/console/app.js".to_owned(),
        _ => route.template().to_owned(),
    };
    let body = match route {
        Route::PublishMessage => Some(json!({
            "event_type": "order.shipped", "payload": {"order": 7}, "recipient": RECIPIENT,
            "channel": "email", "idempotency_key": "k1"
        })),
        // Nothing dead goes to `hooks`: a bulk retry of it re-queues none.
        Route::ResendMessage | Route::RetryDeadLetters => Some(json!({"destination": "hooks"})),
        Route::CreateDestination => Some(json!({
            "name": "created", "url": "http://127.0.0.1:9/created", "event_types": ["order.*"],
            "rate_limit_per_sec": 10
        })),
        Route::UpdateDestination => Some(json!({"rate_limit_per_sec": null, "enabled": false})),
        Route::RotateSecret => Some(json!({"grace_secs": 60})),
        Route::CreateSuppression => Some(json!({
            "recipient": "dave@example.com", "channel": "email", "reason": "user_request",
            "expires_at": "2999-01-01T00:00:00Z", "note": "asked by phone"
        })),
        Route::BulkSuppress => Some(json!({"items": [
            {"recipient": "erin@example.com", "channel": "*", "reason": "bounce"}
        ]})),
        Route::PutPreferences => Some(json!({
            "channels": {"email": true}, "categories": {"marketing": {"email": false}}
        })),
        Route::OptOut | Route::OptIn => Some(json!({"channel": "sms", "category": "news"})),
        Route::InvalidateCache => Some(json!({"pattern": "*"})),
        _ => None,
    };
    (path, body)
}

fn route_suffix(route: Route) -> &'static str {
    match route {
        Route::ResendMessage => "/resend",
        Route::RotateSecret => "/rotate-secret",
        _ => "",
    }
}

/// Sends `route`'s request with `token`; answers the status, content type and body.
async fn send(
    f: &Fixture,
    route: Route,
    token: Option<&str>,
) -> (u16, String, Value, reqwest::header::HeaderMap) {
    let (path, body) = request(route, f);
    let method = Method::from_bytes(route.method().as_str().as_bytes()).unwrap();
    let mut req = f.http.request(method, f.server.api_url(&path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = resp.bytes().await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, content_type, json, headers)
}

fn api_routes() -> impl Iterator<Item = Route> {
    Route::ALL
        .iter()
        .copied()
        .filter(|r| r.ports().includes(Port::Api))
}

#[tokio::test]
async fn every_route_answers_as_documented() {
    let f = fixture().await;
    let doc: Value = f
        .http
        .get(f.server.api_url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc,
        serde_json::from_str::<Value>(&herald::http::openapi::to_json()).unwrap(),
        "the served document is the generated one"
    );

    // Deletions last, so that what they delete was there for the others.
    let (deletes, others): (Vec<Route>, Vec<Route>) =
        api_routes().partition(|r| r.method() == http::Method::DELETE);
    for route in others.into_iter().chain(deletes) {
        let token = match route.access() {
            Access::Public => None,
            Access::Authenticated => Some("test-publisher-token"),
            Access::Token(scope) => Some(token_with(scope)),
        };
        let (status, content_type, body, _) = send(&f, route, token).await;
        let operation = &doc["paths"][route.template()][route.method().as_str().to_lowercase()];
        assert!(operation.is_object(), "{} is not documented", route.label());
        let documented = &operation["responses"][status.to_string()];
        assert!(
            documented.is_object(),
            "{} answered {status}, which is not documented: {body}",
            route.label()
        );
        assert!(
            (200..400).contains(&status),
            "{} answered {status}: {body}",
            route.label()
        );
        if let Some(schema) = documented["content"]["application/json"].get("schema") {
            assert!(
                content_type.starts_with("application/json"),
                "{}",
                route.label()
            );
            if let Err(e) = validate(&doc, schema, &body, "") {
                panic!(
                    "{} answered {status} with a body off its schema: {e}\n{body}",
                    route.label()
                );
            }
        } else if let Some(content) = documented["content"].as_object() {
            let media = content.keys().next().unwrap();
            assert!(
                media == "*/*" || content_type == *media,
                "{}: {content_type} is not the documented {media}",
                route.label()
            );
        }
    }
    f.server.stop().await;
}

#[tokio::test]
async fn the_scope_of_every_route_is_checked_before_its_handler() {
    let f = fixture().await;
    let error = json!({"$ref": "#/components/schemas/Error"});
    let doc: Value = serde_json::from_str(&herald::http::openapi::to_json()).unwrap();
    for route in api_routes() {
        let refused = match route.access() {
            Access::Public => {
                let (status, ..) = send(&f, route, None).await;
                assert!(!matches!(status, 401 | 403), "{} is public", route.label());
                continue;
            }
            Access::Authenticated => vec![None, Some("not-a-token")],
            Access::Token(scope) => vec![None, Some("not-a-token"), Some(token_without(scope))],
        };
        for token in refused {
            let (expected, code) = match token {
                Some(t) if t != "not-a-token" => (403, "forbidden"),
                _ => (401, "unauthorized"),
            };
            let (status, _, body, _) = send(&f, route, token).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (expected, Some(code)),
                "{} with {token:?}: {body}",
                route.label()
            );
            validate(&doc, &error, &body, "").unwrap();
        }
    }
    f.server.stop().await;
}

#[tokio::test]
async fn unknown_paths_are_404_and_other_methods_405() {
    let server = Server::start("").await;
    let http = reqwest::Client::new();
    let doc: Value = serde_json::from_str(&herald::http::openapi::to_json()).unwrap();
    let error = json!({"$ref": "#/components/schemas/Error"});
    for path in [
        "/v1/nothing",
        "/v1/messages/a/b",
        "/wp-login.php",
        "/webhooks/std",
    ] {
        let resp = http
            .get(server.api_url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
        validate(&doc, &error, &body, "").unwrap();
    }
    for (method, path, allow) in [
        (Method::PUT, "/v1/messages", "GET, POST, HEAD"),
        (Method::POST, "/v1/messages/msg_1", "GET, HEAD"),
        (Method::GET, "/v1/dlq/x/retry", "POST"),
        (Method::DELETE, "/openapi.json", "GET, HEAD"),
    ] {
        let resp = http
            .request(method.clone(), server.api_url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 405, "{method} {path}");
        assert_eq!(resp.headers()["allow"], allow, "{method} {path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed");
        validate(&doc, &error, &body, "").unwrap();
    }
    // The ingest port: its own routes only, with the same answers.
    let resp = http
        .get(server.ingest_url("/webhooks/std"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    let resp = http
        .get(server.ingest_url("/v1/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    server.stop().await;
}

/// Latencies are labelled from the route table; a `route:` budget written with the template as
/// this document spells it (`{id}`) sees its route.
#[tokio::test]
async fn a_route_budget_watches_its_route() {
    let server =
        Server::start("[[budgets]]\nmetric = \"route:GET /v1/messages/{id}\"\np75_max = 10000\n")
            .await;
    for id in ["msg_01ARZ3NDEKTSV4RRFFQ69G5FAV", "nope"] {
        let (status, _) = server
            .api_get(&format!("/v1/messages/{id}"), ADMIN_TOKEN)
            .await;
        assert_eq!(status, 404);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, perf) = server.api_get("/v1/perf", ADMIN_TOKEN).await;
        let budget = &perf["budgets"][0];
        assert_eq!(budget["metric"], "route:GET /v1/messages/:id");
        if budget["samples"] == 2 {
            assert_eq!(budget["state"], "ok", "{perf}");
            let routes = perf["routes"].as_array().unwrap();
            assert!(
                routes
                    .iter()
                    .any(|r| r["route"] == "GET /v1/messages/:id" && r["port"] == "api"),
                "{perf}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{perf}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

// ---- a JSON Schema validator for the subset the document uses --------------------------------

/// Validates `value` against `schema` (a schema of `doc`), stricter than JSON Schema in one way:
/// an object property the schema does not list is an error unless `additionalProperties`
/// allows it. A keyword it does not know is an error too, so nothing is skipped unnoticed.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    const KNOWN: &[&str] = &[
        "type",
        "properties",
        "required",
        "additionalProperties",
        "propertyNames",
        "items",
        "oneOf",
        "allOf",
        "enum",
        "format",
        "minimum",
        "maximum",
        "default",
        "description",
        "title",
        "examples",
    ];
    let schema = resolve(doc, schema)?;
    let keywords = schema
        .as_object()
        .ok_or_else(|| format!("{at}: a schema that is not an object: {schema}"))?;
    if let Some(unknown) = keywords.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!("{at}: the validator does not know `{unknown}`"));
    }
    check_scalar(schema, value, at)?;
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let fitting = options
            .iter()
            .filter(|o| validate(doc, o, value, at).is_ok())
            .count();
        if fitting != 1 {
            return Err(format!("{at}: {value} fits {fitting} of oneOf {options:?}"));
        }
    }
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        all_of(doc, parts, value, at)?;
    }
    if let Some(object) = value.as_object() {
        check_object(doc, schema, object, at)?;
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            validate(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// `type`, `enum`, `format: date-time` (RFC 3339 in UTC, as every timestamp) and `minimum`.
fn check_scalar(schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            other => return Err(format!("{at}: odd type {other}")),
        };
        let fits = |t: &str| match t {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        };
        if !types.iter().any(|t| fits(t)) {
            return Err(format!("{at}: {value} is not of type {types:?}"));
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {options:?}"));
    }
    if schema.get("format").and_then(Value::as_str) == Some("date-time")
        && let Some(text) = value.as_str()
        && (!text.ends_with('Z') || humantime::parse_rfc3339(text).is_err())
    {
        return Err(format!("{at}: {text} is not an RFC 3339 time in UTC"));
    }
    if let (Some(min), Some(n)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) && n < min
    {
        return Err(format!("{at}: {n} < {min}"));
    }
    Ok(())
}

/// Each part on its own, then the union of their properties as the object's only fields.
fn all_of(doc: &Value, parts: &[Value], value: &Value, at: &str) -> Result<(), String> {
    let mut listed = Vec::new();
    for part in parts {
        let part = resolve(doc, part)?;
        let mut open = part.clone();
        if let Some(fields) = part.get("properties").and_then(Value::as_object) {
            listed.extend(fields.keys().cloned());
            open["additionalProperties"] = Value::Bool(true);
        }
        validate(doc, &open, value, at)?;
    }
    if let Some(object) = value.as_object()
        && let Some(extra) = object.keys().find(|k| !listed.contains(k))
    {
        return Err(format!("{at}: `{extra}` is not documented"));
    }
    Ok(())
}

fn check_object(
    doc: &Value,
    schema: &Value,
    object: &serde_json::Map<String, Value>,
    at: &str,
) -> Result<(), String> {
    let fields = schema.get("properties").and_then(Value::as_object);
    let required = schema.get("required").and_then(Value::as_array);
    for name in required.into_iter().flatten().filter_map(Value::as_str) {
        if !object.contains_key(name) {
            return Err(format!("{at}: required `{name}` is missing"));
        }
    }
    for (name, field) in object {
        let path = format!("{at}.{name}");
        match (
            fields.and_then(|f| f.get(name)),
            schema.get("additionalProperties"),
        ) {
            (Some(field_schema), _) => validate(doc, field_schema, field, &path)?,
            (None, Some(Value::Bool(true))) => {}
            (None, Some(extra @ Value::Object(_))) => validate(doc, extra, field, &path)?,
            (None, _) if fields.is_some() => {
                return Err(format!("{at}: `{name}` is not documented"));
            }
            // A free-form object, or one whose fields an `allOf` lists (checked there).
            (None, _) => {}
        }
    }
    Ok(())
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> Result<&'a Value, String> {
    match schema.get("$ref").and_then(Value::as_str) {
        None => Ok(schema),
        Some(reference) => {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .ok_or_else(|| format!("odd $ref {reference}"))?;
            let target = &doc["components"]["schemas"][name];
            if target.is_null() {
                return Err(format!("$ref {reference} names no schema"));
            }
            resolve(doc, target)
        }
    }
}

#[test]
fn the_validator_refuses_what_it_should() {
    let doc: Value = serde_json::from_str(&herald::http::openapi::to_json()).unwrap();
    let error = json!({"$ref": "#/components/schemas/Error"});
    let ok = json!({"error": {"code": "not_found", "message": "x"}});
    assert!(validate(&doc, &error, &ok, "").is_ok());
    for bad in [
        json!({"error": {"code": "not_found"}}),
        json!({"error": {"code": 5, "message": "x"}}),
        json!({"error": {"code": "x", "message": "y", "extra": 1}}),
        json!({"oops": {}}),
        json!([]),
    ] {
        assert!(validate(&doc, &error, &bad, "").is_err(), "{bad}");
    }
    let message = json!({"$ref": "#/components/schemas/Message"});
    let summary = json!({
        "id": "msg_1", "source": null, "external_id": null, "event_type": null,
        "content_type": null, "recipient": null, "channel": null, "category": null,
        "received_at": "2026-01-01T00:00:00.000Z", "body_bytes": 2, "deliveries": [],
        "payload": {}
    });
    assert!(validate(&doc, &message, &summary, "").is_ok());
    let mut extra = summary.clone();
    extra["surprise"] = json!(1);
    assert!(
        validate(&doc, &message, &extra, "").is_err(),
        "allOf is strict too"
    );
    let mut local = summary;
    local["received_at"] = json!("2026-01-01T01:00:00+01:00");
    assert!(validate(&doc, &message, &local, "").is_err(), "UTC only");
}
