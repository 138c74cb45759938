//! Deserialization rules the derived impls cannot state: string fields take
//! only strings, a string map takes each key once, an environment entry is
//! read key by key, and free-form tool arguments are bounded in depth.
//!
//! Why strings need a rule: serde_norway's `deserialize_str` hands any plain
//! scalar to the visitor as its source text, so `name: null`, `name: true` and
//! `image: 42` would load as the strings "null", "true" and "42". Reading a
//! string field through `deserialize_any` sees the scalar as YAML resolves it
//! (null, bool, number or string) and rejects all but a string, as JSON does.
//! Every `String` in the spec's types is read through one of the functions
//! here.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::server::{EnvEntry, EnvSource, SecretRef};
use super::show;

/// The deepest that tool arguments may nest, counting the arguments object
/// itself as one level.
pub(crate) const MAX_ARGUMENTS_DEPTH: usize = 32;

/// What a string field's type error says is wanted.
const EXPECTING_STRING: &str =
    "a string (in YAML, quote a value such as null, true or 42 to use it as text)";

/// A string, and only a string.
struct StrictString(String);

impl<'de> Deserialize<'de> for StrictString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(StrictStringVisitor)
            .map(StrictString)
    }
}

struct StrictStringVisitor;

impl Visitor<'_> for StrictStringVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTING_STRING)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
}

/// A string field.
pub(crate) fn string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    StrictString::deserialize(deserializer).map(|s| s.0)
}

/// An optional string field: null or absent is `None`.
pub(crate) fn opt_string<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    Ok(Option::<StrictString>::deserialize(deserializer)?.map(|s| s.0))
}

/// A list of strings.
pub(crate) fn strings<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Ok(Vec::<StrictString>::deserialize(deserializer)?
        .into_iter()
        .map(|s| s.0)
        .collect())
}

/// A map from strings to strings; keys too must be strings, and each may
/// appear once.
pub(crate) fn string_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct MapVisitor;
    impl<'de> Visitor<'de> for MapVisitor {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map from strings to strings")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(StrictString(key)) = map.next_key()? {
                let StrictString(value) = map.next_value()?;
                if out.contains_key(&key) {
                    return Err(de::Error::custom(format_args!(
                        "key {} is given more than once",
                        show::quote(&key)
                    )));
                }
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(MapVisitor)
}

// ----- environment entries ---------------------------------------------------

/// The keys of an environment entry.
const ENV_KEYS: &[&str] = &["name", "value", "secret"];

enum EnvKey {
    Name,
    Value,
    Secret,
}

impl<'de> Deserialize<'de> for EnvKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = EnvKey;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one of `name`, `value`, `secret`")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<EnvKey, E> {
                match v {
                    "name" => Ok(EnvKey::Name),
                    "value" => Ok(EnvKey::Value),
                    "secret" => Ok(EnvKey::Secret),
                    other => Err(E::unknown_field(other, ENV_KEYS)),
                }
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// Reads `{name, value}` or `{name, secret}` key by key, so that an unknown
/// key, a wrong type or a missing source is reported at the entry's own path
/// (serde's `flatten` buffers the entry and loses both the key and the path).
impl<'de> Deserialize<'de> for EnvEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EnvEntryVisitor)
    }
}

struct EnvEntryVisitor;

impl<'de> Visitor<'de> for EnvEntryVisitor {
    type Value = EnvEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an environment entry: a map with `name` and one of `value` or `secret`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EnvEntry, A::Error> {
        let mut name = None;
        let mut value = None;
        let mut secret = None;
        while let Some(key) = map.next_key::<EnvKey>()? {
            match key {
                EnvKey::Name if name.is_some() => return Err(de::Error::duplicate_field("name")),
                EnvKey::Value if value.is_some() => {
                    return Err(de::Error::duplicate_field("value"));
                }
                EnvKey::Secret if secret.is_some() => {
                    return Err(de::Error::duplicate_field("secret"));
                }
                EnvKey::Name => name = Some(map.next_value::<StrictString>()?.0),
                EnvKey::Value => value = Some(map.next_value::<StrictString>()?.0),
                EnvKey::Secret => secret = Some(map.next_value::<SecretRef>()?),
            }
        }
        let name = name.ok_or_else(|| de::Error::missing_field("name"))?;
        let source = match (value, secret) {
            (Some(value), None) => EnvSource::Value(value),
            (None, Some(secret)) => EnvSource::Secret(secret),
            (Some(_), Some(_)) => {
                return Err(de::Error::custom(
                    "has both `value` and `secret`; give exactly one",
                ));
            }
            (None, None) => {
                return Err(de::Error::custom(
                    "has neither `value` nor `secret`; give exactly one",
                ));
            }
        };
        Ok(EnvEntry { name, source })
    }
}

// ----- tool arguments ----------------------------------------------------------

/// Free-form tool arguments, as a JSON value nested at most
/// [`MAX_ARGUMENTS_DEPTH`] levels deep. The bound is checked while reading, so
/// that a deeper document is refused here, at the arguments' path, before the
/// parser's own recursion limit refuses it without one.
pub(crate) fn arguments<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<serde_json::Value, D::Error> {
    JsonSeed {
        levels_left: MAX_ARGUMENTS_DEPTH,
    }
    .deserialize(deserializer)
}

/// Reads one JSON value that may open `levels_left` more objects or arrays.
#[derive(Clone, Copy)]
struct JsonSeed {
    levels_left: usize,
}

impl<'de> DeserializeSeed<'de> for JsonSeed {
    type Value = serde_json::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl JsonSeed {
    /// The seed for a value inside an object or array, or the error if this
    /// one may open no more.
    fn inner<E: de::Error>(self) -> Result<JsonSeed, E> {
        match self.levels_left.checked_sub(1) {
            Some(levels_left) => Ok(JsonSeed { levels_left }),
            None => Err(E::custom(format_args!(
                "nested more than {MAX_ARGUMENTS_DEPTH} levels deep; tool arguments may nest at most {MAX_ARGUMENTS_DEPTH} levels"
            ))),
        }
    }
}

impl<'de> Visitor<'de> for JsonSeed {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
        serde_json::Number::from_i128(v)
            .map(serde_json::Value::Number)
            .ok_or_else(|| E::custom(format_args!("integer {v} is out of range")))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
        serde_json::Number::from_u128(v)
            .map(serde_json::Value::Number)
            .ok_or_else(|| E::custom(format_args!("integer {v} is out of range")))
    }

    /// As serde_json does: a float JSON cannot hold (NaN, infinity) is null.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let inner = self.inner()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let inner = self.inner()?;
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(inner)?;
            object.insert(key, value);
        }
        Ok(serde_json::Value::Object(object))
    }
}
