//! TLS for the listeners and for connections to other members, with rustls (the `ring`
//! provider).
//!
//! Certificates are read once at start from `tls.cert_file`, `tls.key_file` and `tls.ca_file`
//! (PEM). A listener with `tls = true` accepts only TLS: a plain-text client's first bytes fail
//! the handshake and the connection is closed. `tls_client_certs` decides whether a client must
//! present a certificate chaining to the CA. When the admin listener speaks TLS, this member
//! also speaks TLS to the other members' admin ports, presenting its own certificate (they ask
//! for one by default) and checking theirs against the CA and the address it dialled.

use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{Config, ListenerConfig};
use crate::node::PortKind;

/// How long a client may take to complete its handshake before the connection is dropped, so
/// half-open handshakes cannot hold connection slots (Redis uses its client timeout; 10 s is
/// far above a handshake's few round trips).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS could not be set up; the member does not start.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} from {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} holds no {what}")]
    Empty { what: &'static str, path: String },
    #[error("invalid TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid CA certificates in {path}: {message}")]
    Verifier { path: String, message: String },
}

/// The acceptors of the TLS listeners and the connector for other members.
#[derive(Clone, Default)]
pub struct Tls {
    client: Option<TlsAcceptor>,
    admin: Option<TlsAcceptor>,
    peers: Option<TlsConnector>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("client", &self.client.is_some())
            .field("admin", &self.admin.is_some())
            .field("peers", &self.peers.is_some())
            .finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|source| TlsError::Read { what: "certificates", path: path.to_owned(), source })?;
    if certs.is_empty() {
        return Err(TlsError::Empty { what: "certificate", path: path.to_owned() });
    }
    Ok(certs)
}

fn key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Read {
        what: "a private key",
        path: path.to_owned(),
        source,
    })
}

fn roots(path: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certs(path)? {
        store.add(cert)?;
    }
    Ok(Arc::new(store))
}

fn acceptor(config: &Config, listener: &ListenerConfig) -> Result<TlsAcceptor, TlsError> {
    let tls = &config.tls;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = if listener.tls_client_certs == "no" {
        builder.with_no_client_auth()
    } else {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots(&tls.ca_file)?, provider());
        let verifier = if listener.tls_client_certs == "optional" {
            verifier.allow_unauthenticated()
        } else {
            verifier
        };
        let verifier = verifier.build().map_err(|e| TlsError::Verifier {
            path: tls.ca_file.clone(),
            message: e.to_string(),
        })?;
        builder.with_client_cert_verifier(verifier)
    };
    let server = builder.with_single_cert(certs(&tls.cert_file)?, key(&tls.key_file)?)?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// A client configuration that trusts the CA certificates in `ca_file` and, when given,
/// presents the certificate and key of `identity` (`(cert_file, key_file)`).
///
/// # Errors
///
/// Unreadable PEM files, or a key that does not match its certificate.
pub fn client_config(
    ca_file: &str,
    identity: Option<(&str, &str)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_file)?);
    let config = match identity {
        Some((cert, key_file)) => builder.with_client_auth_cert(certs(cert)?, key(key_file)?)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The name to check a server certificate against, from `host:port` (or `[v6]:port`).
///
/// # Errors
///
/// A host that is neither an IP address nor a DNS name.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_matches(['[', ']']);
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{addr}: not a name to check a certificate against: {e}"))
}

impl Tls {
    /// Reads the certificates the configuration names.
    ///
    /// # Errors
    ///
    /// Unreadable or empty PEM files, a key that does not match, a CA the verifier refuses.
    pub fn load(config: &Config) -> Result<Tls, TlsError> {
        let net = &config.network;
        let client = net.client.tls.then(|| acceptor(config, &net.client)).transpose()?;
        let admin = net.admin.tls.then(|| acceptor(config, &net.admin)).transpose()?;
        let peers = if net.admin.tls {
            let t = &config.tls;
            Some(TlsConnector::from(client_config(&t.ca_file, Some((&t.cert_file, &t.key_file)))?))
        } else {
            None
        };
        Ok(Tls { client, admin, peers })
    }

    /// The acceptor of a listener that speaks TLS.
    pub fn acceptor(&self, port: PortKind) -> Option<&TlsAcceptor> {
        match port {
            PortKind::Client => self.client.as_ref(),
            PortKind::Admin => self.admin.as_ref(),
        }
    }

    /// The connector for other members' admin ports, when they speak TLS.
    pub fn peers(&self) -> Option<TlsConnector> {
        self.peers.clone()
    }
}

/// A connection to another member, in plain text or TLS.
pub trait PeerIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync> PeerIo for T {}

/// Connects to another member's admin address `addr` (`host:port`), over TLS when `tls` is set,
/// checking its certificate against the CA and `host`.
///
/// # Errors
///
/// The connection's or the handshake's error, as text.
pub async fn connect(addr: &str, tls: Option<&TlsConnector>) -> Result<Box<dyn PeerIo>, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("{addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let Some(connector) = tls else { return Ok(Box::new(stream)) };
    let name = server_name(addr)?;
    let tls = connector
        .connect(name, stream)
        .await
        .map_err(|e| format!("{addr}: TLS handshake failed: {e}"))?;
    Ok(Box::new(tls))
}
