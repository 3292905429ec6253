//! User ids: the one validated name every queue, token and route is keyed by.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// A user id: 1–64 characters of `[A-Za-z0-9_.@-]`; anything else is
/// refused with 400.
///
/// Constructed only through [`Uid::parse`], so holding one proves it is valid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Uid(String);

/// The reason a string is not a uid, worded for an API error message.
#[derive(Debug, thiserror::Error)]
#[error("uid must be 1-64 characters of [A-Za-z0-9_.@-]")]
pub struct InvalidUid;

impl Uid {
    /// Validates `s` as a uid.
    pub fn parse(s: &str) -> Result<Uid, InvalidUid> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-');
        if (1..=64).contains(&s.len()) && s.chars().all(valid_char) {
            Ok(Uid(s.to_owned()))
        } else {
            Err(InvalidUid)
        }
    }

    /// The queue of the backend feed (`GET /api/v1/feed`): what clients
    /// send, for the chat backend. `!` is outside the uid alphabet, so no
    /// client can be this user.
    pub fn feed() -> Uid {
        Uid("!feed".to_owned())
    }

    /// The queue of partition `p` of the backend feed (`--feed-partitions`):
    /// partition 0 is [`Uid::feed`], so one partition is the feed of old.
    pub fn feed_partition(p: u32) -> Uid {
        match p {
            0 => Uid::feed(),
            p => Uid(format!("!feed{p}")),
        }
    }

    /// Whether this is a queue of the backend feed.
    pub fn is_feed(&self) -> bool {
        self.0.starts_with("!feed")
    }

    /// A uid as the store wrote it: a client's, or a feed partition's.
    pub fn from_store(s: &str) -> Result<Uid, InvalidUid> {
        match s.strip_prefix("!feed") {
            Some("") => Ok(Uid::feed()),
            Some(p) => p.parse().map(Uid::feed_partition).map_err(|_| InvalidUid),
            None => Uid::parse(s),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Uid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Uid::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::Uid;

    #[test]
    fn accepts_the_spec_alphabet_and_rejects_the_rest() {
        assert!(Uid::parse("alice").is_ok());
        assert!(Uid::parse("a.b-c_d@e9").is_ok());
        assert!(Uid::parse(&"x".repeat(64)).is_ok());
        for bad in ["", " ", "a b", "ali/ce", "é", "a\0", &"x".repeat(65)] {
            assert!(Uid::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
