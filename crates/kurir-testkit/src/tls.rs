//! A test certificate authority: issues server certificates for any name, and builds rustls
//! configs that trust only it.
//!
//! Tests need TLS that really verifies (a client that skipped verification would pass a test
//! that should fail), so nothing here disables checks: a client config from [`TestCa`] trusts
//! exactly one CA, and a certificate is valid only for the names it was issued for.
//!
//! Every config is built with the ring provider passed explicitly, because no process-wide
//! default provider is installed (and installing one from a test kit would leak into the code
//! under test).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};

/// File name [`TestCa::write_ca_pem`] writes.
pub const CA_FILE: &str = "test-ca.pem";

/// Numbers the CAs of this process so their subjects differ.
static CA_COUNTER: AtomicU64 = AtomicU64::new(1);

/// A certificate authority that lives for one test. Each `new()` is a fresh key, so a client
/// from one `TestCa` never trusts a server from another.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
    cert_pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The PEM is long and the private key must never reach a test log.
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A leaf certificate issued by a [`TestCa`], in the forms servers take it.
#[derive(Debug)]
pub struct IssuedCert {
    /// The leaf first, then the CA certificate.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key (PKCS#8).
    pub key: PrivateKeyDer<'static>,
    /// `chain` as PEM, leaf first: what servers configured by file read as their cert file.
    pub chain_pem: String,
    /// `key` as PEM (`BEGIN PRIVATE KEY`).
    pub key_pem: String,
}

impl Clone for IssuedCert {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            chain_pem: self.chain_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// A new CA with a fresh key. Panics only if key generation fails, which is a broken
    /// environment rather than a test failure.
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A distinct subject per CA: with equal subjects a verifier would pick the wrong issuer
        // and report a bad signature instead of an unknown issuer.
        let n = CA_COUNTER.fetch_add(1, Ordering::Relaxed);
        let subject = format!("kurir test CA {} {n}", std::process::id());
        params.distinguished_name.push(DnType::CommonName, subject);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("generate CA key");
        let cert = params.self_signed(&key).expect("self-sign CA certificate");
        Self {
            cert_pem: cert.pem(),
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Issues a server (and client) certificate for `names`: DNS names or IP addresses, the
    /// first also being the subject's common name. Panics on a name that is neither, since
    /// names in tests are literals.
    pub fn issue(&self, names: &[&str]) -> IssuedCert {
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans)
            .unwrap_or_else(|e| panic!("invalid certificate names {names:?}: {e}"));
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("generate leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign leaf certificate");
        IssuedCert {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            chain: vec![cert.der().clone(), self.cert.clone()],
            key_pem: key.serialize_pem(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }

    /// A server config presenting a certificate for `names`, TLS 1.2 and 1.3.
    pub fn server_config(&self, names: &[&str]) -> Arc<ServerConfig> {
        self.server_config_with_versions(names, rustls::DEFAULT_VERSIONS)
    }

    /// A server config limited to `versions` (e.g. `&[&rustls::version::TLS12]`), for tests
    /// of what a peer with an older stack looks like.
    pub fn server_config_with_versions(
        &self,
        names: &[&str],
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ServerConfig> {
        let issued = self.issue(names);
        let config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .expect("ring supports the requested TLS versions")
            .with_no_client_auth()
            .with_single_cert(issued.chain, issued.key)
            .expect("issued key matches its certificate");
        Arc::new(config)
    }

    /// A client config that trusts only this CA, TLS 1.2 and 1.3, no client certificate.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).expect("CA certificate parses");
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// The CA certificate (DER), for code that builds its own root store.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate as PEM.
    pub fn ca_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes the CA certificate to `dir/test-ca.pem` for clients configured by file
    /// (Python's `ssl.create_default_context(cafile=…)`, swaks `--tls-ca-path`).
    pub fn write_ca_pem(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join(CA_FILE);
        fs::write(&path, &self.cert_pem)?;
        Ok(path)
    }

    /// Issues a certificate for `names` and writes `dir/cert.pem` (chain, leaf first) and
    /// `dir/key.pem`, returning both paths, for servers configured by file.
    pub fn write_cert_and_key(
        &self,
        dir: &Path,
        names: &[&str],
    ) -> std::io::Result<(PathBuf, PathBuf)> {
        let issued = self.issue(names);
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        fs::write(&cert_path, &issued.chain_pem)?;
        fs::write(&key_path, &issued.key_pem)?;
        Ok((cert_path, key_path))
    }
}

/// The ring provider, passed explicitly to every builder (see the module docs).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    /// Runs a real handshake over an in-memory pipe and sends one byte through it; returns
    /// the client's error, if any.
    async fn handshake(
        client: Arc<ClientConfig>,
        server: Arc<ServerConfig>,
        name: &str,
    ) -> Result<(), std::io::Error> {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server_task = tokio::spawn(async move {
            let mut tls = TlsAcceptor::from(server).accept(server_io).await?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await?;
            Ok::<_, std::io::Error>(byte[0])
        });
        let name = ServerName::try_from(name.to_owned()).expect("valid name");
        let client = async {
            let mut tls = TlsConnector::from(client).connect(name, client_io).await?;
            tls.write_all(b"x").await?;
            tls.flush().await?;
            Ok::<_, std::io::Error>(tls)
        }
        .await;
        // The client stream stays open until the server has read, so that the server's
        // post-handshake writes (TLS 1.3 tickets) do not fail on a closed pipe.
        let served = server_task.await.expect("server task");
        let _tls = client?;
        assert_eq!(served.expect("server side"), b'x');
        Ok(())
    }

    #[tokio::test]
    async fn client_accepts_its_cas_server_for_the_issued_name() {
        let ca = TestCa::new();
        let server = ca.server_config(&["mx.example.test", "127.0.0.1"]);
        handshake(ca.client_config(), server.clone(), "mx.example.test")
            .await
            .expect("handshake by name");
        handshake(ca.client_config(), server, "127.0.0.1")
            .await
            .expect("handshake by IP address");
    }

    #[tokio::test]
    async fn client_rejects_a_wrong_name() {
        let ca = TestCa::new();
        let err = handshake(
            ca.client_config(),
            ca.server_config(&["mx.example.test"]),
            "other.example.test",
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("not valid for name"), "{err}");
    }

    #[tokio::test]
    async fn client_rejects_a_certificate_from_another_ca() {
        let ours = TestCa::new();
        let theirs = TestCa::new();
        let err = handshake(
            ours.client_config(),
            theirs.server_config(&["mx.example.test"]),
            "mx.example.test",
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    }

    #[tokio::test]
    async fn tls12_only_server_still_handshakes() {
        let ca = TestCa::new();
        let server =
            ca.server_config_with_versions(&["mx.example.test"], &[&rustls::version::TLS12]);
        handshake(ca.client_config(), server, "mx.example.test")
            .await
            .expect("TLS 1.2 handshake");
    }

    #[test]
    fn files_hold_pem() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let ca_path = ca.write_ca_pem(dir.path()).unwrap();
        let (cert, key) = ca
            .write_cert_and_key(dir.path(), &["mx.example.test"])
            .unwrap();
        assert_eq!(fs::read_to_string(ca_path).unwrap(), ca.ca_pem());
        let chain = fs::read_to_string(cert).unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(chain.ends_with(ca.ca_pem()));
        assert!(
            fs::read_to_string(key)
                .unwrap()
                .contains("BEGIN PRIVATE KEY")
        );
    }
}
