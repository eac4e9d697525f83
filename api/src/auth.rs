//! Bearer tokens -> `Viewer`. Nothing else in the server knows about JWTs.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};

use crate::config::TokenSettings;
use crate::error::ApiError;

/// The authenticated caller of one request or WebSocket connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
}

#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    settings: TokenSettings,
}

impl JwtKeys {
    /// Keys with the default checks (5 s leeway, no `iss`/`aud`).
    pub fn new(secret: &[u8]) -> Self {
        Self::with_settings(secret, &TokenSettings::default())
    }

    pub fn with_settings(secret: &[u8], settings: &TokenSettings) -> Self {
        // HS256 only: a token naming any other algorithm (or `none`) is refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = settings.jwt_leeway_secs;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &settings.jwt_issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        // Without a configured audience, `aud` is not checked (a token made
        // for several services still works here).
        match &settings.jwt_audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            settings: settings.clone(),
        }
    }

    pub fn issue(&self, sub: &str, name: Option<&str>, email: Option<&str>, ttl: Duration) -> String {
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let claims = Claims {
            sub: sub.to_owned(),
            exp: now + ttl.as_secs(),
            name: name.map(str::to_owned),
            email: email.map(str::to_owned),
            iat: Some(now),
            iss: self.settings.jwt_issuer.clone(),
            aud: self.settings.jwt_audience.clone().map(serde_json::Value::String),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).expect("HS256 signing cannot fail")
    }

    /// Checks signature, algorithm and expiry and returns who the token names.
    pub fn verify(&self, token: &str) -> Result<Viewer, ApiError> {
        let data = decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            let why = match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::InvalidSignature => "the token's signature is not valid",
                ErrorKind::InvalidAlgorithm => "the token must be signed with HS256",
                ErrorKind::MissingRequiredClaim(_) => {
                    "the token lacks a required claim (sub, exp, and iss/aud when configured)"
                }
                ErrorKind::InvalidIssuer => "the token's issuer (iss) is not accepted",
                ErrorKind::InvalidAudience => "the token's audience (aud) does not include this server",
                _ => "the token is malformed",
            };
            ApiError::Unauthenticated(format!("Unauthenticated: {why}"))
        })?;
        let sub = data.claims.sub.trim();
        if sub.is_empty() || sub.len() > 255 {
            return Err(ApiError::Unauthenticated(
                "Unauthenticated: the token's sub claim is empty or too long".into(),
            ));
        }
        Ok(Viewer {
            id: sub.to_owned(),
            name: data.claims.name,
            email: data.claims.email,
        })
    }

    /// Reads `Authorization: Bearer <jwt>` (the value of the header).
    pub fn verify_header(&self, header: Option<&str>) -> Result<Viewer, ApiError> {
        let Some(value) = header else {
            return Err(ApiError::Unauthenticated(
                "Unauthenticated: send an Authorization: Bearer <token> header".into(),
            ));
        };
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::Unauthenticated("Unauthenticated: the Authorization header must be 'Bearer <token>'".into())
            })?;
        self.verify(token.trim())
    }
}

/// Parses a duration such as `90s`, `15m`, `1h`, `7d` (a bare number is seconds).
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration '{s}'"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("invalid duration unit in '{s}' (use s, m, h or d)")),
    };
    Ok(Duration::from_secs(n * mult))
}
