//! Request bodies: JSON whatever the `Content-Type` says, within the size limit, with errors
//! that name the field at fault (`payload.x: invalid type…`, `url: missing field`).

use http::HeaderMap;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use super::App;
use super::body;
use super::response::ApiError;

pub async fn read<T: DeserializeOwned>(
    app: &App,
    headers: &HeaderMap,
    incoming: Incoming,
) -> Result<T, ApiError> {
    let bytes = body::read(headers, incoming, app.max_body_bytes, app.body_timeout).await?;
    parse(&bytes)
}

/// [`read`], where an empty body means `T::default()` (for bodies whose every field is optional).
pub async fn read_or_default<T: DeserializeOwned + Default>(
    app: &App,
    headers: &HeaderMap,
    incoming: Incoming,
) -> Result<T, ApiError> {
    let bytes = body::read(headers, incoming, app.max_body_bytes, app.body_timeout).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse(&bytes)
    }
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::invalid("body", format_args!("malformed JSON: {inner}"))
        } else {
            let field = if path == "." { "body".to_owned() } else { path };
            ApiError::invalid(&field, strip_position(&inner.to_string()))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::invalid("body", format_args!("malformed JSON: {e}")))?;
    Ok(value)
}

/// Parses `bytes` as each request body the API reads, discarding the results (errors are
/// rendered, as a response would be): the `api_json` fuzz target's entry point. Not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn parse_request_bodies(bytes: &[u8]) {
    fn one<T: DeserializeOwned>(bytes: &[u8]) {
        if let Err(e) = parse::<T>(bytes) {
            drop(e.into_response());
        }
    }
    use herald_actors::admin;
    one::<admin::destinations::NewDestination>(bytes);
    one::<admin::destinations::DestinationPatch>(bytes);
    one::<admin::destinations::Rotation>(bytes);
    one::<admin::dlq::BulkRetry>(bytes);
    one::<admin::messages::Resend>(bytes);
    one::<admin::suppressions::SuppressionInput>(bytes);
    one::<admin::suppressions::BulkSuppressions>(bytes);
    one::<admin::preferences::PreferencesInput>(bytes);
    one::<admin::preferences::OptInput>(bytes);
    one::<super::messages::PublishRequest>(bytes);
    one::<super::monitoring::Invalidate>(bytes);
}

/// `serde_json` appends " at line 1 column 17" to messages; the field name says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        limit: Option<u32>,
        nested: Option<Nested>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Nested {
        flag: bool,
    }

    #[test]
    fn errors_name_the_field() {
        let msg = |raw: &str| parse::<Body>(raw.as_bytes()).unwrap_err().message;
        assert!(msg("{").starts_with("body: malformed JSON"));
        assert!(msg("").starts_with("body: malformed JSON"));
        assert!(msg(r#"{"limit": 1}"#).contains("missing field `name`"));
        assert!(msg(r#"{"name": 5}"#).starts_with("name: invalid type"));
        assert!(msg(r#"{"name": "x", "nested": {"flag": "yes"}}"#).starts_with("nested.flag:"));
        assert!(msg(r#"{"name": "x", "extra": 1}"#).contains("unknown field `extra`"));
        assert!(msg(r#"{"name": "x"} trailing"#).starts_with("body: malformed JSON"));
        assert_eq!(parse::<Body>(br#"{"name":"x"}"#).unwrap().name, "x");
    }
}
