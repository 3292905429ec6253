//! HTTPS on the TCP listener: the certificate (`--tls-cert` and
//! `--tls-key`, or one made at start with `--tls-self-signed`) and rustls,
//! offering HTTP/2 and HTTP/1.1 by ALPN on TCP, and HTTP/3 to
//! WebTransport on UDP.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use crate::config::Config;

/// How long a certificate made at start is valid: browsers take a
/// certificate by its hash (WebTransport's `serverCertificateHashes`) only
/// when it is valid for at most 14 days.
const SELF_SIGNED_DAYS: i64 = 13;

/// What the listener needs to speak TLS.
pub struct Tls {
    pub acceptor: TlsAcceptor,
    /// The same certificate for WebTransport: TLS 1.3 only, ALPN `h3`.
    pub http3: rustls::ServerConfig,
    /// The SHA-256 of the certificate made at start (lowercase hex);
    /// `None` for a certificate read from a file.
    pub self_signed: Option<String>,
}

/// The TLS setup `config` asks for, if any; the error is one line.
pub fn load(config: &Config, local: SocketAddr) -> Result<Option<Tls>, String> {
    let (chain, key, self_signed) = if config.tls_self_signed {
        let (cert, key) = self_signed(local)?;
        let hash = hex(&Sha256::digest(&cert));
        (vec![cert], key, Some(hash))
    } else if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        (read_chain(cert)?, read_key(key)?, None)
    } else {
        return Ok(None);
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = |versions: &[&'static rustls::SupportedProtocolVersion], alpn: &[&[u8]]| {
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("--tls-key does not fit --tls-cert: {e}"))?;
        server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok::<_, String>(server)
    };
    let tcp = server(rustls::DEFAULT_VERSIONS, &[b"h2", b"http/1.1"])?;
    let http3 = server(&[&rustls::version::TLS13], &[b"h3"])?;
    Ok(Some(Tls {
        acceptor: TlsAcceptor::from(Arc::new(tcp)),
        http3,
        self_signed,
    }))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let unreadable = |e: rustls::pki_types::pem::Error| {
        format!(
            "--tls-cert {}: not a PEM certificate chain: {e}",
            path.display()
        )
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(unreadable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unreadable)?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: holds no CERTIFICATE block",
            path.display()
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("--tls-key {}: not a PEM private key: {e}", path.display()))
}

/// A certificate for localhost, 127.0.0.1 and `local`'s address, valid
/// [`SELF_SIGNED_DAYS`], and its key.
fn self_signed(
    local: SocketAddr,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), String> {
    let failed = |e: rcgen::Error| format!("--tls-self-signed: {e}");
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if !local.ip().is_unspecified() && !local.ip().is_loopback() {
        names.push(local.ip().to_string());
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(failed)?;
    let mut params = rcgen::CertificateParams::new(names).map_err(failed)?;
    // A minute back: a client whose clock is a little behind still takes it.
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::days(SELF_SIGNED_DAYS);
    let cert = params.self_signed(&key).map_err(failed)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((cert.der().clone(), key))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
