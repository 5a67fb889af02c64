//! The one HTTP stack behind every outbound call: Microsoft's APIs, Entra ID and the AWS SDK.
//! It is reqwest over rustls with *ring*. It trusts the Mozilla root certificates compiled into
//! the binary, so a cold start reads and parses no certificate files. Microsoft's and AWS's
//! endpoints chain to those roots.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use rustls::pki_types::CertificateDer;

/// Authorities trusted besides Mozilla's roots: set by [`trust_extra_roots`] (the benchmark's
/// test authority), never in production.
static EXTRA_ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
static TLS_BUILT: AtomicBool = AtomicBool::new(false);

/// Built once per process, whatever the number of clients.
static TLS: LazyLock<rustls::ClientConfig> = LazyLock::new(|| {
    TLS_BUILT.store(true, Ordering::SeqCst);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    // Checked by `config::Environment::extra_root_certificates`.
    roots.add_parsable_certificates(EXTRA_ROOTS.get().into_iter().flatten().cloned());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls's default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
});

/// Trusts `roots` too, in every client built from now on; `false` when a client was built
/// before, or other roots were given (the start must fail rather than run without them).
pub fn trust_extra_roots(roots: Vec<CertificateDer<'static>>) -> bool {
    if roots.is_empty() {
        return true;
    }
    if EXTRA_ROOTS.get() == Some(&roots) {
        return true;
    }
    !TLS_BUILT.load(Ordering::SeqCst) && EXTRA_ROOTS.set(roots).is_ok()
}

/// A client builder with our TLS set-up; callers add their timeouts.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(TLS.clone())
}

/// A client with our TLS set-up and short timeouts (for Entra ID's keys and sign-in).
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    client_builder().connect_timeout(Duration::from_secs(2)).timeout(Duration::from_secs(5)).build()
}
