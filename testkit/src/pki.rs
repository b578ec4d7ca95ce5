//! A throwaway certificate authority (feature `pki`): its certificate in a PEM file for
//! clients to trust, and server certificates it signs, for tests of TLS.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A certificate authority, and the PEM file of its certificate.
pub struct Pki {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM: what clients trust.
    pub ca_file: PathBuf,
}

impl Pki {
    /// A new authority, its certificate written to `dir/ca.pem`.
    pub fn new(dir: &Path) -> Self {
        Self::named(dir, "ca.pem")
    }

    /// A new authority, its certificate written to `dir/file`.
    pub fn named(dir: &Path, file: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("a key");
        let cert = params.self_signed(&key).expect("self-signed");
        let ca_file = dir.join(file);
        std::fs::write(&ca_file, cert.pem()).expect("writes the CA certificate");
        Self { issuer: Issuer::new(params, key), ca_file }
    }

    /// A certificate for `localhost` and 127.0.0.1 (a new key each time): (certificate,
    /// key), PEM.
    pub fn leaf(&self) -> (String, String) {
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("names");
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }

    /// A [`Pki::leaf`] written to `dir/cert.pem` and `dir/key.pem`; their paths.
    pub fn leaf_files(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = self.leaf();
        let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_file, cert).expect("writes the certificate");
        std::fs::write(&key_file, key).expect("writes the key");
        (cert_file, key_file)
    }
}
