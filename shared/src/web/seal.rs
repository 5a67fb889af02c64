//! Sealed, expiring tokens for forms and cookies: JSON claims encrypted and authenticated with
//! AES-256-GCM (they carry the purchase token, the PKCE verifier, the buyer's name and e-mail).
//!
//! A token is `base64url(nonce ‖ ciphertext ‖ tag)`, with a random 96-bit nonce; the claims name
//! their purpose, so a token made for one use (a cookie) is refused for another (a form). The key
//! is derived (HKDF-SHA256) from the configured secret.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{self, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::domain::Timestamp;

/// The shortest signing key accepted (256 bits).
pub const MIN_KEY_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the token is malformed")]
    Malformed,
    /// Altered, or sealed with another key.
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

/// Seals and opens tokens with one secret key.
#[derive(Clone)]
pub struct Sealer {
    key: Arc<LessSafeKey>,
    random: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    /// `None` when the key is shorter than [`MIN_KEY_BYTES`].
    pub fn new(secret: &[u8]) -> Option<Self> {
        if secret.len() < MIN_KEY_BYTES {
            return None;
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"saas-fulfillment sealed tokens").extract(secret);
        let okm = prk.expand(&[b"AES-256-GCM v1"], &aead::AES_256_GCM).ok()?;
        let key = LessSafeKey::new(UnboundKey::from(okm));
        Some(Self { key: Arc::new(key), random: SystemRandom::new() })
    }

    pub fn seal<T: Serialize>(&self, purpose: &str, claims: &T, expires_at: Timestamp) -> String {
        let envelope = Envelope { p: purpose.to_owned(), exp: expires_at.timestamp(), c: claims };
        let mut nonce = [0u8; NONCE_LEN];
        // The operating system's random source; it does not fail on Lambda or any supported OS.
        self.random.fill(&mut nonce).expect("the system's random source");
        let mut sealed = serde_json::to_vec(&envelope).expect("claims serialize");
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut sealed)
            .expect("claims are far below AES-GCM's limit");
        let mut token = nonce.to_vec();
        token.append(&mut sealed);
        URL_SAFE_NO_PAD.encode(token)
    }

    pub fn open<T: DeserializeOwned>(
        &self,
        purpose: &str,
        token: &str,
        now: Timestamp,
    ) -> Result<T, SealError> {
        let mut bytes = URL_SAFE_NO_PAD.decode(token.trim()).map_err(|_| SealError::Malformed)?;
        if bytes.len() < NONCE_LEN + aead::AES_256_GCM.tag_len() {
            return Err(SealError::Malformed);
        }
        let mut sealed = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| SealError::Malformed)?;
        let json =
            self.key.open_in_place(nonce, Aad::empty(), &mut sealed).map_err(|_| SealError::BadSignature)?;
        let envelope: Envelope<T> = serde_json::from_slice(json).map_err(|_| SealError::Malformed)?;
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
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).expect("base64url");
        for at_byte in [0, NONCE_LEN, bytes.len() - 1] {
            bytes[at_byte] ^= 1;
            let altered = URL_SAFE_NO_PAD.encode(&bytes);
            assert_eq!(
                sealer().open::<String>("form", &altered, at(0)),
                Err(SealError::BadSignature),
                "byte {at_byte}"
            );
            bytes[at_byte] ^= 1;
        }
        let short = URL_SAFE_NO_PAD.encode(&bytes[..NONCE_LEN + 15]);
        for junk in ["", ".", "abc", "!!", short.as_str(), &"x".repeat(4096)] {
            assert!(sealer().open::<String>("form", junk, at(0)).is_err(), "{junk:?}");
        }
    }

    /// Cookies and forms carry the purchase token, the PKCE verifier, the buyer's name and e-mail:
    /// whoever sees a token (a browser extension, a log of the page) reads none of it.
    #[test]
    fn a_sealed_token_shows_nothing_of_its_claims() {
        let secret = "buyer@contoso.example";
        let token = sealer().seal("form", &secret, at(60));
        let decoded: Vec<u8> =
            token.split('.').filter_map(|part| URL_SAFE_NO_PAD.decode(part).ok()).flatten().collect();
        let text = String::from_utf8_lossy(&decoded);
        assert!(!text.contains("contoso") && !text.contains("form"), "{text}");
        assert_ne!(token, sealer().seal("form", &secret, at(60)), "two seals of the same claims differ");
        assert_eq!(sealer().open::<String>("form", &token, at(0)).as_deref(), Ok(secret));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(Sealer::new(&[1u8; 31]).is_none());
    }
}
