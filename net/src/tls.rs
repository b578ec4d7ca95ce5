//! TLS on the port: the certificate and key from PEM files (reloaded when they change, no
//! restart), the server's rustls configuration, and the sans-IO glue between a rustls session
//! and a core's non-blocking socket.
//!
//! The cores terminate TLS themselves, so the port keeps its per-core `SO_REUSEPORT`
//! listeners: a core does the handshake, decrypts the request head, keeps `/ws` and the
//! health endpoints, and hands any other connection to the control plane with its session
//! (see [`crate::server::HttpHandoff`]). HTTP/1.1 is the only protocol offered over ALPN
//! (WebSocket upgrades are HTTP/1.1).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, ServerConnection, SignatureScheme};
use serde::Deserialize;
use socket2::Socket;

/// `[server.tls]`: terminate TLS on the port (HTTPS and WSS) when both files are given.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM (the server's certificate first, then intermediates).
    pub cert_file: Option<PathBuf>,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// How often the files are checked for a renewed certificate, in seconds; a change is
    /// served to new connections without a restart.
    pub reload_interval_s: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self { cert_file: None, key_file: None, reload_interval_s: 10 }
    }
}

impl TlsConfig {
    /// Whether TLS is on; an error when only one of the two files is given.
    pub fn enabled(&self) -> Result<bool, String> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), Some(_)) => Ok(true),
            (None, None) => Ok(false),
            _ => Err("server.tls needs both cert_file and key_file (or neither)".into()),
        }
    }
}

/// The crypto rustls uses in this process (ring: the S3 client's too, one library).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a file the TLS configuration names (`what` says which, in errors).
fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading the {what} {}: {e}", path.display()))
}

/// The PEM certificates in `pem` (read from `file`).
fn certificates(pem: &[u8], file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("reading the certificate {}: {e}", file.display()))
}

/// Reads a certificate chain and its key, and checks that they belong together.
pub fn load_certified(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
    let files = (read(cert_file, "certificate")?, read(key_file, "private key")?);
    certified(&files, cert_file, key_file)
}

/// The pair in the files' contents `(certificate chain, key)`, checked to belong together.
fn certified(
    (cert_pem, key_pem): &(Vec<u8>, Vec<u8>),
    cert_file: &Path,
    key_file: &Path,
) -> Result<CertifiedKey, String> {
    let chain = certificates(cert_pem, cert_file)?;
    if chain.is_empty() {
        return Err(format!("{}: no PEM certificate in it", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("reading the private key {}: {e}", key_file.display()))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InvalidCertificate(why) => {
            format!("the certificate {} does not parse: {why:?}", cert_file.display())
        }
        e => format!("the key {} does not fit the certificate {}: {e}", key_file.display(), cert_file.display()),
    })
}

/// What the two files hold, to tell a renewal (a few kilobytes, read every few seconds:
/// modification times can be too coarse to see two writes in a row, and a renewal keeps the
/// size); the same bytes are parsed when they changed.
type Stamps = Result<(Vec<u8>, Vec<u8>), String>;

/// The certificate being served, swapped when its files change.
#[derive(Debug)]
pub struct Certs {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Stamps)>,
}

impl Certs {
    /// Loads the files (an error names the file and what is wrong with it).
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, String> {
        let files = (read(cert_file, "certificate")?, read(key_file, "private key")?);
        let key = certified(&files, cert_file, key_file)?;
        Ok(Arc::new(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new((Arc::new(key), Ok(files))),
        }))
    }

    /// What the files hold now.
    fn stamps(&self) -> Stamps {
        Ok((read(&self.cert_file, "certificate")?, read(&self.key_file, "private key")?))
    }

    /// The certificate and key served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()).0)
    }

    /// Loads the files again if they changed. `Ok(true)`: a new certificate is served from
    /// now on; `Err`: the files changed but do not make a valid pair (the old one stays,
    /// and the error is reported again at the next change).
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let stamps = self.stamps();
        if self.current.read().unwrap_or_else(|e| e.into_inner()).1 == stamps {
            return Ok(false);
        }
        let loaded = stamps.clone().and_then(|files| certified(&files, &self.cert_file, &self.key_file));
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        // Either way, this version of the files has been looked at.
        current.1 = stamps;
        current.0 = Arc::new(loaded?);
        Ok(true)
    }

    /// Checks the files every `interval` on a thread of its own, until `self` is dropped.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new().name("tandem-tls-reload".into()).spawn(move || {
            loop {
                std::thread::sleep(interval);
                let Some(certs) = weak.upgrade() else { return };
                match certs.reload_if_changed() {
                    Ok(true) => tracing::info!(cert = %certs.cert_file.display(), "TLS certificate reloaded"),
                    Ok(false) => {}
                    Err(e) => tracing::error!("TLS certificate not reloaded, still serving the previous one: {e}"),
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!("TLS certificates will not be reloaded: starting the thread failed: {e}");
        }
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The port's TLS: the rustls configuration every core's sessions share.
#[derive(Clone, Debug)]
pub struct Tls {
    /// The rustls configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// The certificate it serves.
    pub certs: Arc<Certs>,
}

impl Tls {
    /// Loads the configured files and starts watching them; `None` when TLS is off.
    pub fn start(cfg: &TlsConfig) -> Result<Option<Self>, String> {
        if !cfg.enabled()? {
            return Ok(None);
        }
        let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) else { return Ok(None) };
        let certs = Certs::load(cert, key)?;
        certs.watch(Duration::from_secs(cfg.reload_interval_s.max(1)));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&certs) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Self { config: Arc::new(config), certs }))
    }
}

/// A client configuration that trusts exactly the certificate `certs` serves now, whatever
/// name it carries: for this machine's own processes reaching the port over loopback (the
/// export worker), where the name in a public certificate would not match `127.0.0.1`.
pub fn pinned_client_config(certs: &Arc<Certs>) -> Arc<rustls::ClientConfig> {
    let verifier = Arc::new(Pinned { certs: Arc::clone(certs), provider: provider() });
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Arc::new(config)
}

/// A client configuration that trusts the certificate authorities in a PEM file.
pub fn client_config_trusting(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = certificates(&read(ca_file, "certificate")?, ca_file)?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{}: no usable certificate in it", ca_file.display()));
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Trusts the one certificate the port serves (see [`pinned_client_config`]).
#[derive(Debug)]
struct Pinned {
    certs: Arc<Certs>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.certs.current().end_entity_cert() {
            Ok(ours) if ours.as_ref() == end_entity.as_ref() => Ok(ServerCertVerified::assertion()),
            _ => Err(rustls::Error::General("not the certificate this server's configuration names".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Plaintext bytes encrypted per round: the session holds at most this much (plus one frame)
/// of a connection's output, the rest stays in the connection's queue.
pub(crate) const ENCRYPT_BATCH: usize = 64 * 1024;

/// Whether the first bytes a client sent can start a TLS handshake (a handshake record).
/// A plain HTTP request on a TLS port starts with a method's letters instead.
pub(crate) fn looks_like_tls(first: &[u8]) -> bool {
    first.first() == Some(&0x16)
}

/// One connection's TLS session, driven over a non-blocking socket: raw bytes in,
/// plaintext out; plaintext in, records out.
pub(crate) struct TlsSession(Box<ServerConnection>);

/// What feeding received bytes to a session found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// The session goes on.
    Open,
    /// The client closed it (`close_notify`).
    Closed,
}

impl TlsSession {
    pub(crate) fn new(config: &Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let mut conn = ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
        // The connection's queue bounds its output; this session only holds one batch.
        conn.set_buffer_limit(None);
        Ok(Self(Box::new(conn)))
    }

    /// Decrypts `raw` (bytes read from the socket), giving each piece of plaintext to `plain`.
    /// An error means the session failed; an alert may be waiting to be written.
    pub(crate) fn receive(&mut self, mut raw: &[u8], plain: &mut dyn FnMut(&[u8])) -> io::Result<Received> {
        let mut buf = [0u8; 16 * 1024];
        while !raw.is_empty() {
            self.0.read_tls(&mut raw)?;
            let state = self.0.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            loop {
                match self.0.reader().read(&mut buf) {
                    Ok(0) => return Ok(Received::Closed),
                    Ok(n) => plain(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if state.peer_has_closed() {
                return Ok(Received::Closed);
            }
        }
        Ok(Received::Open)
    }

    /// Encrypts `plain` for sending (it is written by [`TlsSession::write_to`]).
    pub(crate) fn send(&mut self, plain: &[u8]) {
        // Unbounded (set_buffer_limit(None)): the whole slice is taken.
        let _ = self.0.writer().write_all(plain);
    }

    /// Ends the session: a `close_notify` follows what was sent.
    pub(crate) fn close(&mut self) {
        self.0.send_close_notify();
    }

    /// Whether the handshake is still going on.
    #[cfg(test)]
    pub(crate) fn is_handshaking(&self) -> bool {
        self.0.is_handshaking()
    }

    /// Writes the pending records without blocking (to a socket: [`SendTo`]). `Ok(true)`
    /// when none are left; `Ok(false)` when the socket is full.
    pub(crate) fn write_to(&mut self, out: &mut dyn Write, mut on_write: impl FnMut()) -> io::Result<bool> {
        while self.0.wants_write() {
            match self.0.write_tls(out) {
                Ok(_) => on_write(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Records waiting to be written.
    pub(crate) fn wants_write(&self) -> bool {
        self.0.wants_write()
    }

    /// A session taken back (from a handoff that was refused).
    pub(crate) fn from_inner(conn: Box<ServerConnection>) -> Self {
        Self(conn)
    }

    /// The rustls session, for the control plane to go on with.
    pub(crate) fn into_inner(self) -> Box<ServerConnection> {
        self.0
    }
}

/// `send(2)` with `MSG_NOSIGNAL`, as `io::Write` for rustls.
pub(crate) struct SendTo<'a>(pub(crate) &'a Socket);

impl Write for SendTo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send_with_flags(buf, libc::MSG_NOSIGNAL)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_files_or_neither() {
        assert_eq!(TlsConfig::default().enabled(), Ok(false));
        let half = TlsConfig { cert_file: Some("c.pem".into()), ..TlsConfig::default() };
        assert!(half.enabled().unwrap_err().contains("both cert_file and key_file"));
    }

    #[test]
    fn missing_and_wrong_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let e = load_certified(&cert, &key).unwrap_err();
        assert!(e.contains("reading the certificate") && e.contains("cert.pem"), "{e}");
        std::fs::write(&cert, "not a certificate\n").unwrap();
        std::fs::write(&key, "not a key\n").unwrap();
        let e = load_certified(&cert, &key).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
    }

    /// A certificate for `localhost` and its key, as PEM, written to `dir`.
    fn write_test_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), name.to_owned()]).unwrap();
        let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, signing_key.serialize_pem()).unwrap();
        (c, k)
    }

    /// The port's TLS with a fresh certificate in `dir`.
    fn test_tls(dir: &Path) -> Tls {
        let (cert, key) = write_test_cert(dir, "one");
        Tls::start(&TlsConfig { cert_file: Some(cert), key_file: Some(key), reload_interval_s: 60 }).unwrap().unwrap()
    }

    #[test]
    fn a_session_shakes_hands_and_carries_bytes_both_ways_without_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let tls = test_tls(dir.path());
        let mut server = TlsSession::new(&tls.config).unwrap();
        let client_config = pinned_client_config(&tls.certs);
        let mut client =
            rustls::ClientConnection::new(client_config, ServerName::try_from("localhost").unwrap()).unwrap();
        let mut received = Vec::new();
        // Records travel through byte vectors instead of sockets.
        for _ in 0..10 {
            let mut to_server = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut to_server).unwrap();
            }
            server.receive(&to_server, &mut |p| received.extend_from_slice(p)).unwrap();
            let mut to_client = Vec::new();
            assert!(server.write_to(&mut to_client, || {}).unwrap());
            client.read_tls(&mut &to_client[..]).unwrap();
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
        }
        assert!(!server.is_handshaking());
        client.writer().write_all(b"GET /ws HTTP/1.1\r\n\r\n").unwrap();
        let mut to_server = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut to_server).unwrap();
        }
        // Fed a byte at a time: records split anywhere still decrypt.
        for b in &to_server {
            assert_eq!(
                server.receive(std::slice::from_ref(b), &mut |p| received.extend_from_slice(p)).unwrap(),
                Received::Open
            );
        }
        assert_eq!(received, b"GET /ws HTTP/1.1\r\n\r\n");
        server.send(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        server.close();
        let mut to_client = Vec::new();
        assert!(server.write_to(&mut to_client, || {}).unwrap());
        client.read_tls(&mut &to_client[..]).unwrap();
        let state = client.process_new_packets().unwrap();
        assert!(state.peer_has_closed());
        let mut answer = Vec::new();
        let _ = client.reader().read_to_end(&mut answer);
        assert_eq!(answer, b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        // The client's close ends the server's session.
        client.send_close_notify();
        let mut to_server = Vec::new();
        client.write_tls(&mut to_server).unwrap();
        assert_eq!(server.receive(&to_server, &mut |_| {}).unwrap(), Received::Closed);
    }

    #[test]
    fn garbage_fails_the_session_with_an_alert_for_the_client() {
        let dir = tempfile::tempdir().unwrap();
        let tls = test_tls(dir.path());
        let mut server = TlsSession::new(&tls.config).unwrap();
        // A handshake record holding a ClientHello cut short.
        let garbage = [0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0x03, 0x03, 0x00, 0x00];
        let e = server.receive(&garbage, &mut |_| panic!("no plaintext")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        let mut alert = Vec::new();
        server.write_to(&mut alert, || {}).unwrap();
        assert_eq!(alert.first(), Some(&0x15), "an alert record");
    }

    #[test]
    fn a_renewed_certificate_is_served_and_a_broken_renewal_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_test_cert(dir.path(), "one");
        let certs = Certs::load(&cert, &key).unwrap();
        let first = certs.current().end_entity_cert().unwrap().to_vec();
        assert_eq!(certs.reload_if_changed(), Ok(false));
        let (cert2, key2) = write_test_cert(dir.path(), "two");
        std::fs::rename(&cert2, &cert).unwrap();
        std::fs::rename(&key2, &key).unwrap();
        assert_eq!(certs.reload_if_changed(), Ok(true));
        let second = certs.current().end_entity_cert().unwrap().to_vec();
        assert_ne!(first, second);
        // A certificate whose key is not there yet (renewals write two files): refused, the
        // second pair still served, and the pair loaded once the key arrives.
        let (cert3, key3) = write_test_cert(dir.path(), "three");
        std::fs::rename(&cert3, &cert).unwrap();
        let e = certs.reload_if_changed().unwrap_err();
        assert!(e.contains("does not fit"), "{e}");
        assert_eq!(certs.current().end_entity_cert().unwrap().as_ref(), &second[..]);
        std::fs::rename(&key3, &key).unwrap();
        assert_eq!(certs.reload_if_changed(), Ok(true));
        assert_ne!(certs.current().end_entity_cert().unwrap().as_ref(), &second[..]);
    }

    #[test]
    fn a_plain_request_is_told_apart_from_a_handshake() {
        assert!(looks_like_tls(&[0x16, 0x03, 0x01]));
        assert!(!looks_like_tls(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_tls(b""));
    }
}
