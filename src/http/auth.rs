//! Authentication: HMAC-SHA256 signed client tokens (`sub` = uid, `exp`)
//! and the backends' API key.

use std::time::Duration;

use hyper::header::AUTHORIZATION;
use hyper::Request;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::request::Query;
use crate::error::Error;
use crate::store::now_ms;
use crate::uid::Uid;

/// Longest token lifetime that may be minted: 30 days.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// Signs and checks tokens, checks the API key.
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    api_key: String,
}

impl Auth {
    pub fn new(secret: &[u8], api_key: String) -> Auth {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Auth {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            api_key,
        }
    }

    /// A token for `uid` valid for `ttl`.
    pub fn mint(&self, uid: &Uid, ttl: Duration) -> Result<String, Error> {
        let claims = Claims {
            sub: uid.to_string(),
            exp: now_ms() / 1000 + ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::Internal(format!("token signing failed: {e}")))
    }

    /// The uid a client request is authenticated as: its token comes from
    /// `Authorization: Bearer` or, for transports that cannot send headers,
    /// from `?token=`.
    pub fn user<B>(&self, req: &Request<B>) -> Result<Uid, Error> {
        let query = Query::of(req);
        let token = bearer(req)
            .or_else(|| query.get("token").map(str::to_owned))
            .ok_or_else(|| {
                Error::Unauthorized("a token is required (Authorization: Bearer or ?token=)".into())
            })?;
        self.verify(&token)
    }

    /// The uid `token` was minted for, if it is valid and unexpired.
    pub fn verify(&self, token: &str) -> Result<Uid, Error> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| Error::Unauthorized(format!("invalid token: {e}")))?;
        Uid::parse(&data.claims.sub)
            .map_err(|_| Error::Unauthorized("invalid token: bad sub".into()))
    }

    /// Checks a backend request's API key.
    pub fn backend<B>(&self, req: &Request<B>) -> Result<(), Error> {
        match bearer(req) {
            Some(key) if constant_time_eq(key.as_bytes(), self.api_key.as_bytes()) => Ok(()),
            Some(_) => Err(Error::Unauthorized("invalid API key".into())),
            None => Err(Error::Unauthorized(
                "an API key is required (Authorization: Bearer)".into(),
            )),
        }
    }
}

fn bearer<B>(req: &Request<B>) -> Option<String> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_owned())
}

/// Compares secrets without an early exit that would leak, by timing, how
/// many leading bytes matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
