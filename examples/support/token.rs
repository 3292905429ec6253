//! A client token as herald mints them (HS256 JWT, `sub` + `exp`), made
//! by the load clients themselves from the server's `--secret`.

use jsonwebtoken::{EncodingKey, Header};

/// A token for `uid`, valid for an hour, signed with `secret`.
pub fn token(secret: &str, uid: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 3600;
    jsonwebtoken::encode(
        &Header::default(),
        &serde_json::json!({"sub": uid, "exp": exp}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}
