//! The coordinator's own certificate authority: TLS with no outside PKI.
//!
//! On first start the coordinator creates a CA in `DATA_DIR/tls/` (`ca.pem`, and `ca.key`
//! readable by its owner only). At every start it signs a fresh server certificate with it,
//! and at every join or credential rotation a client certificate for the agent. Agents pin the
//! CA by the fingerprint that `ipw token create` prints; see [`ipw_proto::tls`].

use crate::infra::auth::sha256;
use crate::infra::revoked::{RevocationAware, RevokedCerts};
use anyhow::Context;
use ipw_proto::files::write_private;
use ipw_proto::tls::{SERVER_NAME, fingerprint};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

/// The CA's name. Fixed, so the issuer can be rebuilt from the stored key alone; what tells
/// two coordinators' CAs apart is their key, and so their fingerprint.
const CA_NAME: &str = "ipw-fleet coordinator CA";

/// A CA certificate and its signing key.
pub struct Authority {
    ca_pem: String,
    ca_der: Vec<u8>,
    key: KeyPair,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}

/// A certificate with its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, followed by the CA's for a server certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
    /// SHA-256 of the (first) certificate's DER, as `agents.client_cert_sha256` stores it.
    pub sha256: Vec<u8>,
}

/// Where the CA lives inside a data directory.
pub fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

/// The CA certificate a local `ipw` trusts: `DATA_DIR/tls/ca.pem`.
pub fn ca_file(data_dir: &Path) -> PathBuf {
    tls_dir(data_dir).join("ca.pem")
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    dn.push(DnType::OrganizationName, "ipw-fleet");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

/// A validity window from yesterday (clock skew between machines) for `years`.
fn validity(params: &mut CertificateParams, years: i64) {
    let now = rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(chrono::Utc::now().timestamp() as u64);
    params.not_before = now - std::time::Duration::from_secs(86_400);
    params.not_after = now + std::time::Duration::from_secs(years as u64 * 365 * 86_400);
}

impl Authority {
    /// Loads the CA from `data_dir/tls`, creating it on first start.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        let dir = tls_dir(data_dir);
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        if cert_path.exists() {
            return Self::load(&dir);
        }
        let authority = Self::generate()?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // The certificate is written last: its presence says the pair is complete, and a key
        // left alone by a crash is replaced on the next start.
        write_private(&key_path, authority.key.serialize_pem().as_bytes())?;
        write_private(&cert_path, authority.ca_pem.as_bytes())?;
        tracing::info!(dir = %dir.display(), fingerprint = %authority.fingerprint(), "created the coordinator's CA");
        Ok(authority)
    }

    /// Loads the CA from `dir` (`ca.pem`, `ca.key`), read-only: several coordinators serving
    /// one fleet share one CA this way (`--tls-dir`, a mounted secret under Helm).
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        let ca_pem = std::fs::read_to_string(&cert_path).with_context(|| format!("reading {}", cert_path.display()))?;
        let key_pem = std::fs::read_to_string(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
        let key =
            KeyPair::from_pem(&key_pem).with_context(|| format!("{} is not a private key", key_path.display()))?;
        let ca_der =
            ipw_proto::tls::pem_to_der(&ca_pem).map_err(|e| anyhow::anyhow!("{}: {e}", cert_path.display()))?;
        Ok(Self { ca_pem, ca_der, key })
    }

    /// A new CA, in memory only (tests).
    pub fn generate() -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = ca_params();
        validity(&mut params, 10);
        let cert = params.self_signed(&key)?;
        Ok(Self { ca_pem: cert.pem(), ca_der: cert.der().to_vec(), key })
    }

    /// The CA's fingerprint, `sha256:<hex>`, as agents pin it.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.ca_der)
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Signs `params`, valid for `years`, for the public half of `key`.
    fn sign_for(
        &self,
        mut params: CertificateParams,
        years: i64,
        key: &impl rcgen::PublicKeyData,
    ) -> anyhow::Result<rcgen::Certificate> {
        validity(&mut params, years);
        Ok(params.signed_by(key, &Issuer::new(ca_params(), &self.key))?)
    }

    /// Signs `params` for a key made here, returned with the certificate.
    fn sign(&self, params: CertificateParams, years: i64) -> anyhow::Result<Issued> {
        let key = KeyPair::generate()?;
        let cert = self.sign_for(params, years, &key)?;
        Ok(Issued { sha256: sha256(cert.der()), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A server certificate for [`SERVER_NAME`], `localhost`, the loopback addresses and
    /// `extra_names` (host names or IP addresses), with the CA appended to make the chain.
    pub fn server_certificate(&self, extra_names: &[String]) -> anyhow::Result<Issued> {
        let mut names = vec![SERVER_NAME.to_owned(), "localhost".into(), "127.0.0.1".into(), "::1".into()];
        names.extend(extra_names.iter().cloned());
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, SERVER_NAME);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let mut issued = self.sign(params, 1)?;
        issued.cert_pem.push_str(&self.ca_pem);
        Ok(issued)
    }

    /// A client certificate naming `agent_id`, for mTLS, for the key of `csr_pem` (a PEM
    /// certificate signing request, whose signature proves the agent holds the key). Only the
    /// key is taken from the request: the name, usage and validity are the coordinator's.
    /// The returned `key_pem` is empty: the key never left the agent.
    pub fn client_certificate(&self, agent_id: Uuid, csr_pem: &str) -> anyhow::Result<Issued> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .context("the certificate signing request is not a valid, self-signed PEM CSR")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, format!("ipw-agent {agent_id}"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = self.sign_for(params, 5, &csr.public_key)?;
        Ok(Issued { sha256: sha256(cert.der()), cert_pem: cert.pem(), key_pem: String::new() })
    }

    /// What the coordinator serves TLS with: a fresh server certificate, HTTP/2, and the CA
    /// for client certificates, refusing `revoked` ones at the handshake. Client certificates
    /// are optional at the TLS layer (agents join without one); the agent service checks them
    /// when the coordinator requires mTLS.
    pub fn server_config(&self, extra_names: &[String], revoked: RevokedCerts) -> anyhow::Result<Arc<ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(self.ca_der.clone()))?;
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()?;
        let server = self.server_certificate(extra_names)?;
        let chain = pem::parse_many(&server.cert_pem)?
            .into_iter()
            .map(|p| CertificateDer::from(p.into_contents()))
            .collect::<Vec<_>>();
        let key = PrivatePkcs8KeyDer::from(pem::parse(&server.key_pem)?.into_contents());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(RevocationAware { inner, revoked }))
            .with_single_cert(chain, key.into())?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_ca_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = Authority::load_or_create(dir.path()).unwrap();
        let again = Authority::load_or_create(dir.path()).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        let mode = std::fs::metadata(tls_dir(dir.path()).join("ca.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the CA key is its owner's only");
        assert!(first.fingerprint().starts_with("sha256:") && first.fingerprint().len() == 71);
        assert_ne!(first.fingerprint(), Authority::generate().unwrap().fingerprint());
    }

    /// A crash between writing the key and the certificate used to fail every later start
    /// with "File exists"; the lone key is now replaced.
    #[test]
    fn a_key_left_without_its_certificate_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let tls = tls_dir(dir.path());
        std::fs::create_dir_all(&tls).unwrap();
        std::fs::write(tls.join("ca.key"), "half-written").unwrap();
        std::fs::write(tls.join("ca.pem.tmp"), "torn").unwrap();
        let created = Authority::load_or_create(dir.path()).unwrap();
        assert_eq!(Authority::load_or_create(dir.path()).unwrap().fingerprint(), created.fingerprint());
        assert!(!tls.join("ca.pem.tmp").exists());
    }

    #[test]
    fn issued_certificates_chain_to_the_ca() {
        let ca = Authority::generate().unwrap();
        let server = ca.server_certificate(&["coord.lab".into()]).unwrap();
        let chain = pem::parse_many(&server.cert_pem).unwrap();
        assert_eq!(chain.len(), 2, "leaf then CA");
        assert_eq!(fingerprint(chain[1].contents()), ca.fingerprint());
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
        let client = ca.client_certificate(Uuid::nil(), &csr).unwrap();
        assert_eq!(client.sha256, sha256(&ipw_proto::tls::pem_to_der(&client.cert_pem).unwrap()));
        assert!(client.key_pem.is_empty(), "the key stays with the agent");
        let e = ca.client_certificate(
            Uuid::nil(),
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        );
        assert!(format!("{:#}", e.unwrap_err()).contains("not a valid"));
    }
}
