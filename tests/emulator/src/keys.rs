//! The emulator's RSA signing key: generated at start, served as a JWKS, used for RS256 JWTs.

use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// Signs JWTs with an RSA-2048 key created for this emulator instance.
pub(crate) struct Signer {
    key: RsaKeyPair,
    kid: String,
    jwks: Value,
}

impl Signer {
    /// Generates a fresh key pair.
    pub(crate) fn generate() -> std::io::Result<Self> {
        let key = RsaKeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| std::io::Error::other("RSA key generation failed"))?;
        let public = key.public_key();
        let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
        let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
        let mut id = [0u8; 15];
        rand::fill(&mut id);
        let kid = URL_SAFE_NO_PAD.encode(id);
        let jwks = json!({
            "keys": [{
                "kty": "RSA",
                "use": "sig",
                "alg": "RS256",
                "kid": kid,
                "x5t": kid,
                "n": n,
                "e": e,
                "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0"
            }]
        });
        Ok(Self { key, kid, jwks })
    }

    /// The key id (`kid` header of every JWT, `kid` of the JWKS entry).
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWKS document (`{"keys":[…]}`).
    pub(crate) fn jwks(&self) -> Value {
        self.jwks.clone()
    }

    /// An RS256 JWT over `claims` with this key's `kid` (and `x5t`, as Entra's v1 tokens).
    pub(crate) fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({"typ": "JWT", "alg": "RS256", "kid": self.kid, "x5t": self.kid}),
            claims,
        )
    }

    /// An RS256 JWT over `claims` whose header names `kid` (only), as Entra's v2 ID tokens.
    pub(crate) fn sign_with_kid(&self, claims: &Value, kid: &str) -> String {
        self.sign_with_header(&json!({"typ": "JWT", "alg": "RS256", "kid": kid}), claims)
    }

    fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match self.key.sign(&RSA_PKCS1_SHA256, &rng, signing_input.as_bytes(), &mut signature) {
            Ok(()) => format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)),
            // Signing with a valid in-memory key does not fail; an unsigned token is rejected by
            // any verifier, which is the safe outcome if it ever did.
            Err(_) => format!("{signing_input}."),
        }
    }
}

/// An unsecured JWT (`alg: none`, empty signature) over `claims`.
pub(crate) fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"typ": "JWT", "alg": "none"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}
