//! TLS to the server, as libpq's `sslmode` means it, through rustls with the ring provider (no
//! openssl, so no libssl-dev to build and nothing more for the Windows cross build).
//!
//! - `disable`: plain; `prefer` (the default): TLS when the server offers it, else plain;
//!   `require`: TLS, or fail. These two check no certificate (as libpq without a root
//!   certificate), unless `sslrootcert=` is given: then the chain is checked, as libpq does.
//! - `verify-ca`: the certificate chains to `sslrootcert=` (or the system's roots);
//!   `verify-full`: that, and it names the URL's host.
//!
//! One connector type (`Tls`) for every mode: the client's `SslMode` says whether it is used.

use crate::model::error::{Error, Result};
use crate::storage::postgres::url::{SslMode, TlsSettings};
use postgres::tls::MakeTlsConnect;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The pool's, the first connection's and the listener's connector.
#[derive(Clone)]
pub struct Tls(MakeRustlsConnect);

impl MakeTlsConnect<postgres::Socket> for Tls {
    type Stream = <MakeRustlsConnect as MakeTlsConnect<postgres::Socket>>::Stream;
    type TlsConnect = <MakeRustlsConnect as MakeTlsConnect<postgres::Socket>>::TlsConnect;
    type Error = <MakeRustlsConnect as MakeTlsConnect<postgres::Socket>>::Error;

    fn make_tls_connect(
        &mut self,
        hostname: &str,
    ) -> std::result::Result<Self::TlsConnect, Self::Error> {
        // A Unix socket has no host name and the server never offers TLS on it; the client
        // still asks for a connector first, and rustls refuses "" as a name.
        let name = if hostname.is_empty() {
            "localhost"
        } else {
            hostname
        };
        MakeTlsConnect::<postgres::Socket>::make_tls_connect(&mut self.0, name)
    }
}

impl SslMode {
    /// What the client itself does: whether to ask for TLS and whether to insist.
    pub fn client_mode(self) -> postgres::config::SslMode {
        match self {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                postgres::config::SslMode::Require
            }
        }
    }
}

/// Set the client's `sslmode` for `settings` on `config`. Unix sockets stay plain whatever the
/// mode, as with libpq (the server offers no TLS on them, and the client would fail `require`).
pub fn set_mode(config: &mut postgres::Config, settings: &TlsSettings) {
    let hosts = config.get_hosts();
    let only_sockets = !hosts.is_empty()
        && hosts
            .iter()
            .all(|h| !matches!(h, postgres::config::Host::Tcp(_)));
    config.ssl_mode(if only_sockets {
        postgres::config::SslMode::Disable
    } else {
        settings.mode.client_mode()
    });
}

/// The connector for `settings`: reads `sslrootcert=` (or the system's roots) now, so a missing
/// file is an error of opening rather than of every connection.
pub fn connector(settings: &TlsSettings) -> Result<Tls> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match (settings.mode, &settings.root_cert) {
        (SslMode::Disable, _) | (SslMode::Prefer | SslMode::Require, None) => {
            Arc::new(NoCheck(provider.clone()))
        }
        (mode, root_cert) => {
            let roots = Arc::new(roots(root_cert.as_deref())?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| Error::invalid(format!("sslrootcert in the URL: {e}")))?;
            if mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::invalid(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Tls(MakeRustlsConnect::new(config)))
}

/// The trusted roots: the PEM file `sslrootcert=` names, or the system's (also for
/// `sslrootcert=system`, as libpq 16 spells it).
fn roots(root_cert: Option<&str>) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match root_cert.filter(|p| *p != "system") {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| {
                Error::invalid(format!(
                    "sslrootcert={path} in the URL: cannot read it ({e}); give the path of the \
                     PEM file holding the certificate of the CA that signed the server's"
                ))
            })?;
            let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&bytes)
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| {
                    Error::invalid(format!("sslrootcert={path} in the URL: not PEM ({e:?})"))
                })?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::invalid(format!(
                    "sslrootcert={path} in the URL holds no certificate (a PEM file of \
                     -----BEGIN CERTIFICATE----- blocks)"
                )));
            }
        }
        None => {
            store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if store.is_empty() {
                return Err(Error::invalid(
                    "sslmode=verify-ca/verify-full found no trusted root certificates on this \
                     system: give the CA's certificate with sslrootcert=PATH in the URL",
                ));
            }
        }
    }
    Ok(store)
}

/// A word on what to fix when the connection failed over TLS (empty for other failures).
pub fn hint(e: &postgres::Error, settings: &TlsSettings) -> &'static str {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let (mut found, mut no_tls) = (None, false);
    while let Some(s) = source {
        // The client's own refusal is a plain message, its error's source.
        no_tls |= s.to_string().contains("does not support TLS");
        if let Some(r) = s.downcast_ref::<rustls::Error>() {
            found = Some(r);
            break;
        }
        // tokio-rustls hands rustls' error on inside an io::Error.
        source = match s.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => s.source(),
        };
    }
    match found {
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => {
            " (sslmode=verify-full: the server's certificate does not name the URL's host; \
             connect with a host name the certificate holds, or use sslmode=verify-ca to check \
             only its chain)"
        }
        Some(rustls::Error::InvalidCertificate(_)) if settings.root_cert.is_some() => {
            " (the server's certificate was refused: it must be valid now and signed by the CA \
             whose certificate sslrootcert names; give that CA's certificate)"
        }
        Some(rustls::Error::InvalidCertificate(_)) => {
            " (the server's certificate was refused: it must be valid now and signed by a CA \
             this system trusts; give the CA's certificate with sslrootcert=PATH in the URL)"
        }
        Some(_) => {
            " (the TLS handshake with the server failed: check its ssl settings, or the URL's \
             sslmode)"
        }
        None if no_tls => {
            " (the server does not accept TLS: turn ssl on in its postgresql.conf, or connect \
             with sslmode=prefer or disable over a trusted network)"
        }
        None => "",
    }
}

/// `prefer` and `require` without a root certificate: the session is encrypted, the server's
/// certificate is not checked (libpq's meaning); its handshake signatures still are.
#[derive(Debug)]
struct NoCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: webpki's whole check, but a certificate for another host name passes (webpki
/// checks the name last, once the chain is proven).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let checked =
            self.0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        match checked {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
