//! The one HTTP stack behind every outbound call: Microsoft's APIs, Entra ID and the AWS SDK.
//! It is reqwest over rustls with *ring*. It trusts the Mozilla root certificates compiled into
//! the binary, so a cold start reads and parses no certificate files. Microsoft's and AWS's
//! endpoints chain to those roots.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Built once per process, whatever the number of clients.
static TLS: LazyLock<rustls::ClientConfig> = LazyLock::new(|| {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls's default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
});

/// A client builder with our TLS set-up; callers add their timeouts.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(TLS.clone())
}

/// A client with our TLS set-up and short timeouts (for Entra ID's keys and sign-in).
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    client_builder().connect_timeout(Duration::from_secs(2)).timeout(Duration::from_secs(5)).build()
}
