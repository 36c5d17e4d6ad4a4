//! The closed vocabularies stored as text: delivery channels and suppression reasons.
//!
//! Each is parsed once, here, wherever it comes from (the config file, an API body, a
//! webhook's `channel` field), and written back with the same spelling.

use std::fmt;
use std::str::FromStr;

/// A string that names none of a keyword enum's variants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value `{value}`; expected one of: {}", .expected.join(", "))]
pub struct UnknownKeyword {
    pub value: String,
    pub expected: &'static [&'static str],
}

/// Declares an enum of keywords with one spelling in serde, `as_str`/`Display` and `FromStr`
/// (whose error is [`UnknownKeyword`]). Exported: the config file's own vocabularies (scopes,
/// log formats…) are declared with it too.
#[macro_export]
macro_rules! keyword_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident { $($(#[$variant_meta:meta])* $variant:ident = $text:literal,)+ }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
            ::serde::Serialize, ::serde::Deserialize,
        )]
        $vis enum $name {
            $($(#[$variant_meta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            #[allow(dead_code, reason = "a private keyword set may not need it")]
            pub const ALL: &[Self] = &[$(Self::$variant),+];
            /// Every spelling, in declaration order.
            pub const NAMES: &[&str] = &[$($text),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::UnknownKeyword;

            fn from_str(text: &str) -> Result<Self, $crate::UnknownKeyword> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    _ => Err($crate::UnknownKeyword {
                        value: text.to_owned(),
                        expected: Self::NAMES,
                    }),
                }
            }
        }
    };
}

keyword_enum! {
    /// How a destination reaches its recipients; suppressions and preferences apply per channel.
    pub enum Channel {
        Webhook = "webhook",
        Email = "email",
        Sms = "sms",
        Push = "push",
        InApp = "in_app",
    }
}

keyword_enum! {
    /// Why a recipient is suppressed.
    pub enum Reason {
        UserRequest = "user_request",
        Bounce = "bounce",
        Complaint = "complaint",
        AdminAction = "admin_action",
    }
}

/// The channel a suppression applies on: one channel, or `*` for every channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SuppressedOn {
    All,
    Channel(Channel),
}

impl SuppressedOn {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::All => "*",
            Self::Channel(c) => c.as_str(),
        }
    }
}

impl FromStr for SuppressedOn {
    type Err = UnknownKeyword;

    fn from_str(text: &str) -> Result<Self, UnknownKeyword> {
        if text == "*" {
            return Ok(Self::All);
        }
        text.parse()
            .map(Self::Channel)
            .map_err(|e: UnknownKeyword| UnknownKeyword {
                value: e.value,
                expected: &["*", "webhook", "email", "sms", "push", "in_app"],
            })
    }
}

impl fmt::Display for SuppressedOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
