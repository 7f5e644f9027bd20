//! Throwaway certificate authorities for TLS tests (rcgen): a CA, a server certificate for
//! `localhost` / `127.0.0.1`, and client certificates named by a URI SAN (a SPIFFE ID) or a
//! DNS SAN, written as PEM files the server and grpcurl read.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate and its private key, PEM.
pub struct PemIdentity {
    pub cert: String,
    pub key: String,
}

/// Paths of a written [`PemIdentity`].
pub struct PemFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl PemIdentity {
    /// Writes `<name>.crt` and `<name>.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> PemFiles {
        let files = PemFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, &self.cert).expect("write certificate");
        std::fs::write(&files.key, &self.key).expect("write key");
        files
    }
}

/// A certificate authority that signs server and client certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate as `<name>.crt` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.crt"));
        std::fs::write(&path, self.cert_pem()).expect("write CA certificate");
        path
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn server(&self) -> PemIdentity {
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params");
        self.sign(params, ExtendedKeyUsagePurpose::ServerAuth, "token-server")
    }

    /// A client certificate whose only SAN is the URI `uri` (e.g. a SPIFFE ID).
    pub fn client_with_uri(&self, uri: &str) -> PemIdentity {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params
            .subject_alt_names
            .push(SanType::URI(uri.try_into().expect("an IA5 URI")));
        self.sign(params, ExtendedKeyUsagePurpose::ClientAuth, uri)
    }

    /// A client certificate whose only SAN is the DNS name `dns`.
    pub fn client_with_dns(&self, dns: &str) -> PemIdentity {
        let params = CertificateParams::new(vec![dns.to_owned()]).expect("client params");
        self.sign(params, ExtendedKeyUsagePurpose::ClientAuth, dns)
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        usage: ExtendedKeyUsagePurpose,
        name: &str,
    ) -> PemIdentity {
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        PemIdentity {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}
