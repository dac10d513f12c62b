//! Values parsed once at the edge of the system ("parse, don't validate"):
//! each type has private fields and one fallible constructor whose error says
//! what to fix.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an input value was refused; `field` names the input, `message` says
/// what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

macro_rules! string_value {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
            /// For values read back from storage, which only ever holds
            /// values that were parsed on the way in.
            pub fn from_trusted(value: impl Into<String>) -> Self {
                Self(value.into())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

fn trimmed_len(
    field: &'static str,
    raw: &str,
    min: usize,
    max: usize,
) -> Result<String, ValidationError> {
    let value = raw.trim();
    let len = value.chars().count();
    if len < min {
        return Err(ValidationError::new(
            field,
            if min == 1 {
                "must not be empty".to_string()
            } else {
                format!("must be at least {min} characters")
            },
        ));
    }
    if len > max {
        return Err(ValidationError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value.to_string())
}

fn slug(field: &'static str, raw: &str, max: usize) -> Result<String, ValidationError> {
    let value = raw.trim().to_ascii_lowercase();
    if value.is_empty() || value.len() > max {
        return Err(ValidationError::new(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(ValidationError::new(
            field,
            "may contain only letters, digits, '-' and '_'",
        ));
    }
    Ok(value)
}

string_value!(
    /// An e-mail address, trimmed and lower-cased so that it is unique
    /// regardless of how it was typed.
    Email
);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let value = raw.trim().to_lowercase();
        let invalid = || ValidationError::new("email", "must be an address like name@example.com");
        if value.is_empty() || value.len() > 254 || value.chars().any(char::is_whitespace) {
            return Err(invalid());
        }
        let (local, domain) = value.rsplit_once('@').ok_or_else(invalid)?;
        if local.is_empty()
            || local.contains('@')
            || domain.len() < 3
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
        {
            return Err(invalid());
        }
        Ok(Self(value))
    }
}

/// A password as typed at signup or login. Never printed.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub const MIN_LEN: usize = 10;
    pub const MAX_LEN: usize = 256;

    /// Checks the length rules for a new password.
    pub fn parse_new(raw: &str) -> Result<Self, ValidationError> {
        let len = raw.chars().count();
        if len < Self::MIN_LEN {
            return Err(ValidationError::new(
                "password",
                format!("must be at least {} characters", Self::MIN_LEN),
            ));
        }
        if len > Self::MAX_LEN {
            return Err(ValidationError::new(
                "password",
                format!("must be at most {} characters", Self::MAX_LEN),
            ));
        }
        Ok(Self(raw.to_string()))
    }

    /// A password offered at login: only bounded, so that hashing cost is
    /// bounded too; whether it is right is the hash's business.
    pub fn parse_attempt(raw: &str) -> Result<Self, ValidationError> {
        if raw.is_empty() || raw.chars().count() > Self::MAX_LEN {
            return Err(ValidationError::new(
                "password",
                format!("must be 1 to {} characters", Self::MAX_LEN),
            ));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

string_value!(
    /// The name of a customer's company.
    CompanyName
);

impl CompanyName {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        trimmed_len("company", raw, 1, 200).map(Self)
    }
}

string_value!(
    /// A plan's name as the catalog knows it (`hobby`, `starter`, ...).
    /// Syntax only: whether the plan exists is the catalog's answer.
    PlanName
);

impl PlanName {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        slug("plan", raw, 32).map(Self)
    }
}

string_value!(
    /// An infrastructure pool (`hetzner`, `fly`).
    PoolName
);

impl PoolName {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        slug("pool", raw, 32).map(Self)
    }
}

string_value!(
    /// A region code (`iad`, `fra`, `sin`, `fsn1`).
    RegionCode
);

impl RegionCode {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        slug("region", raw, 16).map(Self)
    }
}

string_value!(
    /// An ISO 3166-1 alpha-2 country code, upper-case.
    CountryCode
);

impl CountryCode {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let value = raw.trim().to_ascii_uppercase();
        if value.len() == 2 && ISO_3166_ALPHA2.contains(&value.as_str()) {
            Ok(Self(value))
        } else {
            Err(ValidationError::new(
                "country",
                format!(
                    "'{}' is not an ISO 3166-1 alpha-2 country code such as US or DE",
                    raw.trim()
                ),
            ))
        }
    }
}

string_value!(
    /// A device's unique identifier (IMEI, or the identifier a phone app
    /// reports). Unique across the whole platform.
    DeviceId
);

impl DeviceId {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let value = raw.trim();
        if value.is_empty() || value.len() > 64 {
            return Err(ValidationError::new(
                "device_id",
                "must be 1 to 64 characters",
            ));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            return Err(ValidationError::new(
                "device_id",
                "may contain only letters, digits, '-', '_', '.' and ':'",
            ));
        }
        Ok(Self(value.to_string()))
    }
}

string_value!(
    /// A vehicle's display name.
    VehicleName
);

impl VehicleName {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        trimmed_len("name", raw, 1, 100).map(Self)
    }
}

string_value!(
    /// A short free-text label (plate, group): trimmed, bounded, may be empty.
    ShortText
);

impl ShortText {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ValidationError> {
        trimmed_len(field, raw, 0, 100).map(Self)
    }
}

/// Free-form attributes of a resource: a JSON object, bounded in size.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Attributes(serde_json::Map<String, serde_json::Value>);

impl utoipa::PartialSchema for Attributes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Object)
            .description(Some("Free-form JSON object, at most 16 KiB"))
            .into()
    }
}

impl utoipa::ToSchema for Attributes {}

impl Attributes {
    pub const MAX_BYTES: usize = 16 * 1024;

    pub fn parse(value: serde_json::Value) -> Result<Self, ValidationError> {
        match value {
            serde_json::Value::Object(map) => {
                let size = serde_json::to_vec(&map)
                    .map(|v| v.len())
                    .unwrap_or(usize::MAX);
                if size > Self::MAX_BYTES {
                    return Err(ValidationError::new(
                        "attributes",
                        format!("must serialize to at most {} bytes", Self::MAX_BYTES),
                    ));
                }
                Ok(Self(map))
            }
            serde_json::Value::Null => Ok(Self::default()),
            _ => Err(ValidationError::new("attributes", "must be a JSON object")),
        }
    }

    pub fn as_map(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }

    pub fn from_trusted(map: serde_json::Map<String, serde_json::Value>) -> Self {
        Self(map)
    }
}

/// ISO 3166-1 alpha-2 codes (officially assigned).
const ISO_3166_ALPHA2: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Ana@Example.COM ").unwrap().as_str(),
            "ana@example.com"
        );
        for bad in [
            "",
            "ana",
            "ana@",
            "@example.com",
            "ana@example",
            "a b@example.com",
            "ana@.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn country_must_be_iso() {
        assert_eq!(CountryCode::parse("de").unwrap().as_str(), "DE");
        assert!(CountryCode::parse("XX").is_err());
        assert!(CountryCode::parse("DEU").is_err());
        assert!(
            ISO_3166_ALPHA2.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
    }

    #[test]
    fn device_id_rules() {
        assert!(DeviceId::parse("868683020000001").is_ok());
        assert!(DeviceId::parse("phone-ab:12.x_Y").is_ok());
        assert!(DeviceId::parse("").is_err());
        assert!(DeviceId::parse("has space").is_err());
        assert!(DeviceId::parse(&"1".repeat(65)).is_err());
    }

    #[test]
    fn password_rules_and_debug_hides_it() {
        assert!(Password::parse_new("short").is_err());
        let p = Password::parse_new("correct horse battery").unwrap();
        assert!(!format!("{p:?}").contains("horse"));
    }

    #[test]
    fn attributes_must_be_a_bounded_object() {
        assert!(Attributes::parse(serde_json::json!({"a": 1})).is_ok());
        assert!(Attributes::parse(serde_json::json!([1])).is_err());
        let big = "x".repeat(Attributes::MAX_BYTES);
        assert!(Attributes::parse(serde_json::json!({ "a": big })).is_err());
    }
}
