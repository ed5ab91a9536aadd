//! HTTPS for teams without a proxy in front: `drove serve --tls-cert FILE --tls-key FILE`.
//!
//! rustls with the ring provider; the certificate file is a PEM chain (the server's certificate
//! first), the key file a PEM private key (PKCS#8, PKCS#1 or SEC1). HTTP/1.1 only, as without
//! TLS. The files are read once, at start.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate file {path}: {source}")]
    Certificate { path: String, source: rustls_pki_types::pem::Error },
    #[error("the certificate file {0} holds no certificate")]
    NoCertificate(String),
    #[error("cannot read a private key from {path}: {source}")]
    Key { path: String, source: rustls_pki_types::pem::Error },
    #[error("the certificate and key cannot be used: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server configuration for a certificate chain and its key, in PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let shown = |p: &Path| p.display().to_string();
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificate { path: shown(cert), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(shown(cert)));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key { path: shown(key), source })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
