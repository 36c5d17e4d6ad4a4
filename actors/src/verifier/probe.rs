//! The few body fields herald routes on: `type`, `recipient`, `channel`, `category`.
//!
//! The body is attacker-controlled and need not be JSON at all: anything that is not a JSON
//! object, or a field that is not a string, simply yields `None`. Other fields are skipped
//! without being materialised.

use serde::Deserialize;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BodyFields {
    pub event_type: Option<String>,
    pub recipient: Option<String>,
    pub channel: Option<String>,
    pub category: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Probe {
    #[serde(rename = "type")]
    event_type: Lenient,
    recipient: Lenient,
    channel: Lenient,
    category: Lenient,
}

/// A string, or `None` for any other JSON value.
#[derive(Default)]
struct Lenient(Option<String>);

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Self(Some(s)),
            _ => Self(None),
        })
    }
}

pub fn body_fields(body: &[u8]) -> BodyFields {
    let probe: Probe = serde_json::from_slice(body).unwrap_or_default();
    BodyFields {
        event_type: probe.event_type.0,
        recipient: probe.recipient.0,
        channel: probe.channel.0,
        category: probe.category.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_string_fields_and_ignores_the_rest() {
        let f = body_fields(
            br#"{"type":"email.bounced","recipient":"a@b.c","data":{"x":[1,2]},"channel":"email"}"#,
        );
        assert_eq!(f.event_type.as_deref(), Some("email.bounced"));
        assert_eq!(f.recipient.as_deref(), Some("a@b.c"));
        assert_eq!(f.channel.as_deref(), Some("email"));
        assert_eq!(f.category, None);
    }

    #[test]
    fn anything_else_yields_nothing() {
        for body in [
            &b""[..],
            b"not json",
            b"[1,2]",
            b"\"str\"",
            b"{\"type\": 5}",
            b"{\"type\":",
            &[0xff, 0xfe],
        ] {
            assert_eq!(body_fields(body).event_type, None, "{body:?}");
        }
    }
}
