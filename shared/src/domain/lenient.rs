//! Tolerant decoding of Microsoft's JSON (docs/marketplace-api.md#subscription-object, #operation-object, #webhook-payload, #parsing-rules).
//!
//! Microsoft adds fields, pads enum strings, sends quantities as numbers or strings, and dates with
//! or without offset or time. Every helper here accepts what Microsoft documents and turns
//! anything else into a clear decode error, never a panic.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Utc};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// Instants are UTC throughout the core.
pub type Timestamp = DateTime<Utc>;

/// Declares a string enum that trims padding, matches case-insensitively, accepts legacy aliases,
/// and keeps any value it does not know as `Unknown(String)` instead of failing.
macro_rules! lenient_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal $(| $alias:literal)* ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this version does not know; kept verbatim (trimmed).
            Unknown(String),
        }

        impl $name {
            /// Every value this version knows, in declaration order.
            pub const KNOWN: &'static [$name] = &[$($name::$variant),+];

            /// The canonical wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $wire, )+
                    Self::Unknown(raw) => raw,
                }
            }
        }

        impl From<&str> for $name {
            fn from(raw: &str) -> Self {
                let value = raw.trim();
                $(
                    if value.eq_ignore_ascii_case($wire) $(|| value.eq_ignore_ascii_case($alias))* {
                        return Self::$variant;
                    }
                )+
                Self::Unknown(value.to_owned())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Ok(Self::from(raw.as_ref()))
            }
        }
    };
}
pub(crate) use lenient_enum;

/// A GUID in Microsoft's usual spellings (any case, optionally in braces) as lowercase
/// `8-4-4-4-12`; `None` for anything that is not a GUID. Microsoft's ids are GUIDs compared
/// case-insensitively, so they are normalised once, where they enter, and compared exactly after.
pub fn canonical_guid(raw: &str) -> Option<String> {
    let value = raw.trim();
    let value = value.strip_prefix('{').and_then(|v| v.strip_suffix('}')).unwrap_or(value);
    let bytes = value.as_bytes();
    let shaped = bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    shaped.then(|| value.to_ascii_lowercase())
}

/// Declares a non-empty, trimmed string identifier (a GUID is kept in its canonical form).
macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Trims the value (a GUID also lowercased); `None` when nothing is left.
            pub fn parse(raw: &str) -> Option<Self> {
                if let Some(guid) = $crate::domain::lenient::canonical_guid(raw) {
                    return Some(Self(guid));
                }
                let value = raw.trim();
                (!value.is_empty()).then(|| Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&raw).ok_or_else(|| {
                    serde::de::Error::custom(concat!(stringify!($name), " must not be empty"))
                })
            }
        }
    };
}
pub(crate) use string_id;

/// A seat count: a number, a numeric string (`"20"`), an empty string or `null` (flat-rate plans).
pub fn quantity<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    struct Quantity;

    impl<'de> Visitor<'de> for Quantity {
        type Value = Option<u32>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a non-negative whole number, a numeric string, an empty string or null")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            u32::try_from(v).map(Some).map_err(|_| E::custom(format!("quantity {v} is too large")))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format!("quantity {v} is negative")))
                .and_then(|v| self.visit_u64(v))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            if v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v) {
                Ok(Some(v as u32))
            } else {
                Err(E::custom(format!("quantity {v} is not a whole number of seats")))
            }
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            let v = v.trim();
            if v.is_empty() {
                return Ok(None);
            }
            v.parse::<u32>()
                .map(Some)
                .map_err(|_| E::custom(format!("quantity {v:?} is not a whole number of seats")))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    deserializer.deserialize_any(Quantity)
}

/// An instant: RFC 3339 with up to 7 (or 9) fraction digits, a zone-less date-time (taken as UTC),
/// or a bare date (midnight UTC). `null`, `""` and the `0001-01-01T00:00:00` sentinel mean "unset".
pub fn timestamp<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Timestamp>, D::Error> {
    match Option::<String>::deserialize(deserializer)? {
        None => Ok(None),
        Some(raw) => parse_timestamp(&raw).map_err(de::Error::custom),
    }
}

/// See [`timestamp`]; `Ok(None)` for the empty value and the sentinel.
pub fn parse_timestamp(raw: &str) -> Result<Option<Timestamp>, String> {
    let value = raw.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let parsed = DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc()))
        .or_else(|_| {
            NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        })
        .map_err(|_| format!("{value:?} is not a date or date-time"))?;
    // 0001-01-01T00:00:00 is .NET's DateTime.MinValue: Microsoft's way of saying "no value".
    Ok((parsed.year() > 1).then_some(parsed))
}

/// A boolean that may be `null` or absent (false), or the strings `"true"`/`"false"`.
pub fn flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    match Option::<Flag>::deserialize(deserializer)? {
        None => Ok(false),
        Some(Flag::Bool(value)) => Ok(value),
        Some(Flag::Text(text)) => match text.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" | "" => Ok(false),
            other => Err(de::Error::custom(format!("{other:?} is not true or false"))),
        },
    }
}

/// A list that may be `null` (empty).
pub fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// Free text that may arrive as a number (`puid`, `units`, error codes) or `null`.
/// A value that is dropped (`None`) rather than failing the whole document when it does not parse.
pub fn or_none<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

/// Like [`text`], with a GUID in its canonical form (tenant and object ids).
pub fn guid_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(text(deserializer)?.map(|t| canonical_guid(&t).unwrap_or(t)))
}

pub fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Plain(String),
        Number(serde_json::Number),
        Bool(bool),
    }
    Ok(Option::<Text>::deserialize(deserializer)?.map(|t| match t {
        Text::Plain(s) => s,
        Text::Number(n) => n.to_string(),
        Text::Bool(b) => b.to_string(),
    }))
}
