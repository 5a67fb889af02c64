//! Tamper-proof, expiring tokens for forms and cookies: JSON claims signed with HMAC-SHA256.
//!
//! A token is `base64url(payload) "." base64url(tag)`; the payload names its purpose, so a token
//! made for one use (a cookie) is refused for another (a form).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::domain::Timestamp;

/// The shortest signing key accepted (256 bits).
pub const MIN_KEY_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signature does not match")]
    BadSignature,
    #[error("the token was made for another purpose")]
    WrongPurpose,
    #[error("the token has expired")]
    Expired,
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    /// Purpose.
    p: String,
    /// Expiry, epoch seconds.
    exp: i64,
    /// Claims.
    c: T,
}

/// Signs and checks tokens with one secret key.
#[derive(Clone)]
pub struct Sealer {
    key: hmac::Key,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    /// `None` when the key is shorter than [`MIN_KEY_BYTES`].
    pub fn new(secret: &[u8]) -> Option<Self> {
        (secret.len() >= MIN_KEY_BYTES).then(|| Self { key: hmac::Key::new(hmac::HMAC_SHA256, secret) })
    }

    pub fn seal<T: Serialize>(&self, purpose: &str, claims: &T, expires_at: Timestamp) -> String {
        let envelope = Envelope { p: purpose.to_owned(), exp: expires_at.timestamp(), c: claims };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&envelope).expect("claims serialize"));
        let tag = URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, payload.as_bytes()));
        format!("{payload}.{tag}")
    }

    pub fn open<T: DeserializeOwned>(
        &self,
        purpose: &str,
        token: &str,
        now: Timestamp,
    ) -> Result<T, SealError> {
        let (payload, tag) = token.trim().split_once('.').ok_or(SealError::Malformed)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| SealError::Malformed)?;
        // Constant-time comparison.
        hmac::verify(&self.key, payload.as_bytes(), &tag).map_err(|_| SealError::BadSignature)?;
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| SealError::Malformed)?;
        let envelope: Envelope<T> = serde_json::from_slice(&json).map_err(|_| SealError::Malformed)?;
        if envelope.p != purpose {
            return Err(SealError::WrongPurpose);
        }
        if now.timestamp() >= envelope.exp {
            return Err(SealError::Expired);
        }
        Ok(envelope.c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};

    fn at(seconds: i64) -> Timestamp {
        Utc.timestamp_opt(1_800_000_000 + seconds, 0).single().expect("time")
    }

    fn sealer() -> Sealer {
        Sealer::new(&[7u8; 32]).expect("key")
    }

    #[test]
    fn a_sealed_token_opens_until_it_expires() {
        let token = sealer().seal("form", &"sub-1", at(60));
        assert_eq!(sealer().open::<String>("form", &token, at(0)), Ok("sub-1".to_owned()));
        assert_eq!(sealer().open::<String>("form", &token, at(60)), Err(SealError::Expired));
        assert!(at(60) - at(0) == Duration::seconds(60));
    }

    #[test]
    fn a_changed_token_another_key_or_purpose_is_refused() {
        let token = sealer().seal("form", &"sub-1", at(60));
        let other_key = Sealer::new(&[8u8; 32]).expect("key");
        assert_eq!(other_key.open::<String>("form", &token, at(0)), Err(SealError::BadSignature));
        assert_eq!(sealer().open::<String>("cookie", &token, at(0)), Err(SealError::WrongPurpose));
        let (payload, tag) = token.split_once('.').expect("two parts");
        let forged = sealer().seal("form", &"sub-2", at(60));
        let forged_payload = forged.split_once('.').expect("two parts").0;
        assert_eq!(
            sealer().open::<String>("form", &format!("{forged_payload}.{tag}"), at(0)),
            Err(SealError::BadSignature)
        );
        for junk in ["", ".", "abc", &format!("{payload}."), &format!("{payload}.!!"), &"x".repeat(4096)] {
            assert!(sealer().open::<String>("form", junk, at(0)).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(Sealer::new(&[1u8; 31]).is_none());
    }
}
