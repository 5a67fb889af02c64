//! How the publisher's app proves itself to Entra ID in the client-credentials grant: a client
//! secret, or a certificate whose private key signs a client assertion (a JWT, PS256, naming the
//! certificate by its SHA-256 thumbprint, `x5t#S256`). During a rotation two credentials are
//! configured and the next one is tried when Entra refuses the current one.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PSS_SHA256, RsaKeyPair};
use secrecy::{ExposeSecret, SecretString};

/// How long a client assertion is valid (Entra asks for a short one).
const ASSERTION_LIFETIME_SECS: i64 = 10 * 60;

#[derive(Clone)]
pub enum ClientCredential {
    /// A client secret, with the name of the setting it came from (for logs and the self-check).
    Secret {
        name: &'static str,
        value: SecretString,
    },
    Certificate(Arc<Certificate>),
}

impl std::fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Secret { name, .. } => write!(f, "Secret({name}, [redacted])"),
            Self::Certificate(certificate) => write!(f, "Certificate({})", certificate.thumbprint),
        }
    }
}

/// A certificate registered on the app, with its private key.
pub struct Certificate {
    /// `x5t#S256`: base64url of the SHA-256 of the certificate's DER.
    thumbprint: String,
    key: RsaKeyPair,
}

impl Certificate {
    /// From PEM text: the certificate (the first `CERTIFICATE` block) and its RSA private key
    /// (`PRIVATE KEY`, PKCS#8, or `RSA PRIVATE KEY`, PKCS#1).
    pub fn from_pem(certificate: &str, private_key: &str) -> Result<Self, String> {
        let blocks = pem::parse_many(certificate).map_err(|e| format!("the certificate is not PEM: {e}"))?;
        let der = blocks
            .iter()
            .find(|b| b.tag() == "CERTIFICATE")
            .ok_or("no CERTIFICATE block in the certificate's PEM")?
            .contents();
        let key = pem::parse(private_key).map_err(|e| format!("the private key is not PEM: {e}"))?;
        let key = match key.tag() {
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(key.contents()),
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(key.contents()),
            other => return Err(format!("a {other} block is not an RSA private key")),
        }
        .map_err(|e| format!("the private key is not a usable RSA key: {e}"))?;
        let thumbprint = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, der));
        Ok(Self { thumbprint, key })
    }

    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// A client assertion for `client_id`, for the token endpoint `audience`, at `now` (Unix seconds).
    pub fn assertion(&self, client_id: &str, audience: &str, now: i64) -> Result<String, String> {
        let header = serde_json::json!({ "alg": "PS256", "typ": "JWT", "x5t#S256": self.thumbprint });
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PSS_SHA256, &SystemRandom::new(), signing_input.as_bytes(), &mut signature)
            .map_err(|_| "the client assertion could not be signed".to_owned())?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

impl ClientCredential {
    /// A client secret from the setting `name`.
    pub fn secret(name: &'static str, value: impl Into<String>) -> Self {
        Self::Secret { name, value: SecretString::from(value.into()) }
    }

    /// The form fields that present this credential to the token endpoint `audience`.
    pub(crate) fn form_fields(
        &self,
        client_id: &str,
        audience: &str,
    ) -> Result<Vec<(&'static str, String)>, String> {
        Ok(match self {
            Self::Secret { value, .. } => vec![("client_secret", value.expose_secret().to_owned())],
            Self::Certificate(certificate) => vec![
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
                ),
                (
                    "client_assertion",
                    certificate.assertion(client_id, audience, chrono::Utc::now().timestamp())?,
                ),
            ],
        })
    }

    /// How the logs name it.
    pub fn describe(&self) -> String {
        match self {
            Self::Secret { name, .. } => (*name).to_owned(),
            Self::Certificate(certificate) => {
                format!("ENTRA_CLIENT_CERTIFICATE({})", certificate.thumbprint.get(..12).unwrap_or_default())
            }
        }
    }
}
