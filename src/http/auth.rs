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
use crate::util::SharedMap;

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
    /// Tokens already verified, with their uid and `exp`: a poller sends
    /// the same token with every request, and checking its signature and
    /// claims again each time is most of a short poll's cost.
    verified: SharedMap<Box<str>, (Uid, u64)>,
}

/// Most verified tokens remembered; past it the memory starts over.
const VERIFIED_CAP: usize = 100_000;

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
            verified: SharedMap::default(),
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
    /// from `?token=`. The token is remembered once verified: the same
    /// client sends it with every request.
    pub fn user<B>(&self, req: &Request<B>) -> Result<Uid, Error> {
        self.verify(&token_of(req)?)
    }

    /// Like [`Auth::user`], for a request made once per connection (a
    /// stream): its token is checked and not remembered, which would cost
    /// every open stream a few hundred bytes for nothing.
    pub fn stream_user<B>(&self, req: &Request<B>) -> Result<Uid, Error> {
        self.decode(&token_of(req)?).map(|(uid, _)| uid)
    }

    /// The uid `token` was minted for, if it is valid and unexpired.
    pub fn verify(&self, token: &str) -> Result<Uid, Error> {
        let now = now_ms() / 1000;
        if let Some(known) = self.verified.get(token) {
            let (uid, exp) = known.value();
            if now < *exp {
                return Ok(uid.clone());
            }
        }
        let (uid, exp) = self.decode(token)?;
        if self.verified.len() >= VERIFIED_CAP {
            self.verified.retain(|_, (_, exp)| now < *exp);
            if self.verified.len() >= VERIFIED_CAP {
                self.verified.clear();
            }
        }
        self.verified.insert(token.into(), (uid.clone(), exp));
        Ok(uid)
    }

    /// Checks `token`'s signature and claims: its uid and `exp`.
    fn decode(&self, token: &str) -> Result<(Uid, u64), Error> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| Error::Unauthorized(format!("invalid token: {e}")))?;
        let uid = Uid::parse(&data.claims.sub)
            .map_err(|_| Error::Unauthorized("invalid token: bad sub".into()))?;
        Ok((uid, data.claims.exp))
    }

    /// `sha256=` and the hex HMAC-SHA256 of `body` keyed by the API key:
    /// how a backend knows a webhook `POST` came from herald.
    pub fn sign(&self, body: &[u8]) -> String {
        use hmac::Mac;
        // HMAC takes a key of any length.
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.api_key.as_bytes())
            .expect("HMAC accepts any key length");
        mac.update(body);
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(7 + 64);
        out.push_str("sha256=");
        for byte in digest {
            // Writing into a String cannot fail.
            let _ = std::fmt::Write::write_fmt(&mut out, format_args!("{byte:02x}"));
        }
        out
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

/// A client request's token: `Authorization: Bearer`, or `?token=` for
/// transports that cannot send headers.
fn token_of<B>(req: &Request<B>) -> Result<String, Error> {
    bearer(req)
        .or_else(|| Query::of(req).get("token").map(str::to_owned))
        .ok_or_else(|| {
            Error::Unauthorized("a token is required (Authorization: Bearer or ?token=)".into())
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_token_still_expires_and_a_forged_one_is_refused() {
        let auth = Auth::new(
            b"test-secret-0123456789abcdefghij",
            "test-api-key-012".into(),
        );
        let uid = Uid::parse("alice").unwrap();
        let token = auth.mint(&uid, Duration::from_secs(1)).unwrap();
        assert_eq!(auth.verify(&token).unwrap(), uid);
        assert_eq!(auth.verify(&token).unwrap(), uid, "from memory");
        let forged = format!("{}x", token);
        assert!(auth.verify(&forged).is_err());
        std::thread::sleep(Duration::from_millis(2100));
        assert!(auth.verify(&token).is_err(), "expired, though remembered");
    }
}
