//! TLS on loopback, for measuring what Lambda pays for it: a test certificate authority made
//! afresh each run, and fronts that take TLS connections on `localhost` and pass the bytes to a
//! plain HTTP service (DynamoDB Local, the emulator, moto). Only a process told to trust the
//! authority (`EXTRA_ROOT_CERTIFICATES`, see `fulfillment::config`) can reach them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A certificate authority and the certificate it issued for `localhost` and `127.0.0.1`.
pub struct TestAuthority {
    /// The authority's certificate, PEM: what a client must trust.
    pub ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

impl TestAuthority {
    pub fn new() -> Result<Self, BoxError> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "saas-fulfillment benchmark test authority");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        leaf.distinguished_name.push(DnType::CommonName, "localhost");
        let leaf_key = KeyPair::generate()?;
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;

        let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone(), ca_cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(Self { ca_pem: ca_cert.pem(), server: Arc::new(server) })
    }

    /// Writes the authority's certificate to `dir/ca.pem`; its path.
    pub fn write_ca(&self, dir: &Path) -> Result<PathBuf, BoxError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.ca_pem)?;
        Ok(path)
    }

    /// A front on a free loopback port passing TLS connections on to `backend` (plain TCP).
    pub async fn front(&self, backend: SocketAddr) -> Result<TlsFront, BoxError> {
        self.front_at(backend, Duration::ZERO).await
    }

    /// [`Self::front`], as if `backend` were a round trip `rtt` away: a new connection waits two
    /// (TCP's handshake, then TLS 1.3's), and every answer one (what the backend sends back
    /// reaches the client `rtt` later, in order).
    pub async fn front_at(&self, backend: SocketAddr, rtt: Duration) -> Result<TlsFront, BoxError> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let acceptor = TlsAcceptor::from(self.server.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = client.set_nodelay(true);
                    tokio::time::sleep(rtt * 2).await;
                    // A failed handshake or a reset is the client's business: the front goes on.
                    let Ok(mut client) = acceptor.accept(client).await else { return };
                    let Ok(mut service) = TcpStream::connect(backend).await else { return };
                    let _ = service.set_nodelay(true);
                    if rtt.is_zero() {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut service).await;
                    } else {
                        relay_later(client, service, rtt).await;
                    }
                });
            }
        });
        Ok(TlsFront { port, task })
    }
}

/// Passes bytes both ways, those from `service` `rtt` after they came.
async fn relay_later(client: tokio_rustls::server::TlsStream<TcpStream>, service: TcpStream, rtt: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut service_read, mut service_write) = service.into_split();
    let (sender, mut delayed) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let upstream = async move {
        let _ = tokio::io::copy(&mut client_read, &mut service_write).await;
        let _ = service_write.shutdown().await;
    };
    let stamp = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        while let Ok(read) = service_read.read(&mut buffer).await {
            if read == 0 || sender.send((tokio::time::Instant::now() + rtt, buffer[..read].to_vec())).is_err()
            {
                break;
            }
        }
    };
    let downstream = async move {
        while let Some((due, bytes)) = delayed.recv().await {
            tokio::time::sleep_until(due).await;
            if client_write.write_all(&bytes).await.is_err() || client_write.flush().await.is_err() {
                return;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, stamp, downstream);
}

/// A running front; stops when dropped.
pub struct TlsFront {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    /// `https://localhost:{port}`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The address a plain `http://host:port` URL names, resolved (loopback only here).
pub fn backend_of(url: &str) -> Result<SocketAddr, BoxError> {
    let url = url::Url::parse(url)?;
    let host = url.host_str().ok_or("a URL with a host")?;
    let host = if host == "localhost" { "127.0.0.1" } else { host };
    let port = url.port_or_known_default().ok_or("a URL with a port")?;
    Ok(SocketAddr::new(host.parse()?, port))
}
