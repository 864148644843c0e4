//! The client side of STARTTLS: rustls with the ring provider (passed explicitly; no
//! process-wide default is installed), one config per policy.
//!
//! - `opportunistic` and `require` do not verify the certificate (RFC 7435: encryption
//!   without authentication beats plain text, and most MX certificates would fail a check
//!   against the MX name). [`AcceptAnyCert`] still checks the handshake signatures, so the
//!   peer must hold the key of the certificate it presents.
//! - `verify` checks the chain against `ClientSettings::tls_roots` and the name against
//!   `Target::host`.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, DigitallySignedStruct, ProtocolVersion, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::ClientError;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any certificate, but verifies the handshake signatures with the provider's
/// algorithms (so the server proves it holds the certificate's key).
#[derive(Debug)]
struct AcceptAnyCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The config of `opportunistic` and `require`, built once.
fn unverified_config() -> Result<Arc<ClientConfig>, ClientError> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Ok(config.clone());
    }
    let provider = provider();
    let verifier = Arc::new(AcceptAnyCert {
        provider: provider.clone(),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(CONFIG.get_or_init(|| Arc::new(config)).clone())
}

/// The config of `verify`: the chain must lead to one of `roots`.
fn verified_config(roots: &Arc<RootCertStore>) -> Result<Arc<ClientConfig>, ClientError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name sent in SNI and, under `verify`, checked against the certificate. A host that
/// is no valid name (only possible without `verify`, which needs one) falls back to the IP
/// address, which sends no SNI.
fn server_name(host: &str, ip: IpAddr, verify: bool) -> Result<ServerName<'static>, ClientError> {
    // An absolute name's trailing dot is not part of SNI (RFC 6066) nor of certificate names.
    let host = host.strip_suffix('.').unwrap_or(host);
    match ServerName::try_from(host.to_owned()) {
        Ok(name) => Ok(name),
        Err(e) if verify => Err(ClientError::Tls(format!(
            "{host:?} is not a name a certificate can be verified for: {e}"
        ))),
        Err(_) => Ok(ServerName::IpAddress(ip.into())),
    }
}

/// Runs the TLS handshake over `tcp` (the caller bounds it with the STARTTLS timeout).
pub(super) async fn handshake(
    tcp: TcpStream,
    host: &str,
    ip: IpAddr,
    verify: Option<&Arc<RootCertStore>>,
) -> Result<TlsStream<TcpStream>, ClientError> {
    let config = match verify {
        Some(roots) => verified_config(roots)?,
        None => unverified_config()?,
    };
    let name = server_name(host, ip, verify.is_some())?;
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| ClientError::Tls(e.to_string()))
}

/// `TLSv1.3` / `TLSv1.2` for the session's negotiated version.
pub(super) fn version_name(tls: &TlsStream<TcpStream>) -> Option<&'static str> {
    match tls.get_ref().1.protocol_version()? {
        ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
        ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
        _ => Some("TLS"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_drop_the_trailing_dot_and_fall_back_to_the_address_unless_verifying() {
        let ip: IpAddr = [192, 0, 2, 1].into();
        let name = server_name("mx.example.test.", ip, true).unwrap();
        assert_eq!(name.to_str(), "mx.example.test");
        assert!(matches!(
            server_name("not a name", ip, false).unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("not a name", ip, true),
            Err(ClientError::Tls(_))
        ));
    }
}
