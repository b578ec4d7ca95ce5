//! `wss://` targets: the generator's connections over TLS (rustls), to measure a server that
//! terminates TLS itself as its users would reach it.
//!
//! One setting per process (every connection of a run goes to the same deployment), made
//! once at start ([`init`]) by the coordinator from the command line and by each worker from
//! its job. The monoio connections encrypt and decrypt sans-IO here ([`Session`]), over the
//! same socket reads and writes as plain ones; setup requests (sign-up, `/metrics`) and the
//! blocking clients (preload, checkers) use rustls' own stream.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};

/// How to reach the server over TLS: what to trust, and the name its certificate carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSpec {
    /// A PEM file with the server's certificate or the authority that signed it.
    pub ca_file: PathBuf,
    /// The name to check the certificate against (the target URL's host).
    pub server_name: String,
}

/// The client side of TLS, built from a [`TlsSpec`].
#[derive(Debug)]
pub struct TlsClient {
    /// Whom to trust.
    pub config: Arc<rustls::ClientConfig>,
    /// The name the certificate must carry.
    pub server_name: ServerName<'static>,
    /// What it was built from.
    pub spec: TlsSpec,
}

static CLIENT: OnceLock<Option<TlsClient>> = OnceLock::new();

/// Sets this process's TLS (none: plain `ws://`). Once per process; a second call with a
/// different setting is an error.
pub fn init(spec: Option<&TlsSpec>) -> Result<()> {
    let client = match spec {
        None => None,
        Some(s) => {
            let config = tandem_net::tls::client_config_trusting(&s.ca_file).map_err(|e| anyhow!("--ca-file: {e}"))?;
            let server_name = ServerName::try_from(s.server_name.clone())
                .map_err(|e| anyhow!("{:?} is not a server name: {e}", s.server_name))?;
            Some(TlsClient { config, server_name, spec: s.clone() })
        }
    };
    if let Err(client) = CLIENT.set(client)
        && CLIENT.get().and_then(|c| c.as_ref().map(|c| &c.spec)) != spec
    {
        bail!("TLS was already set up differently in this process ({client:?})");
    }
    Ok(())
}

/// This process's TLS client, if its target is `wss://`.
pub fn client() -> Option<&'static TlsClient> {
    CLIENT.get().and_then(Option::as_ref)
}

/// Blocking clients' options with this process's TLS, if any.
pub fn client_options(mut options: tandem_net::client::ClientOptions) -> tandem_net::client::ClientOptions {
    if let Some(c) = client() {
        options.tls = Some(Arc::clone(&c.config));
        options.server_name = Some(c.spec.server_name.clone());
    }
    options
}

/// A blocking byte stream to `addr` for one HTTP request: plain or TLS.
pub fn http_stream(addr: SocketAddr, timeout: Duration) -> io::Result<Box<dyn ReadWrite>> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    match client() {
        None => Ok(Box::new(s)),
        Some(c) => {
            let conn = rustls::ClientConnection::new(Arc::clone(&c.config), c.server_name.clone())
                .map_err(io::Error::other)?;
            Ok(Box::new(rustls::StreamOwned::new(conn, s)))
        }
    }
}

/// Read + Write, boxed.
pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Reads a whole `Connection: close` response: to the end, or to the TLS close.
pub fn read_to_end(s: &mut dyn ReadWrite, out: &mut Vec<u8>) -> io::Result<()> {
    match s.read_to_end(out) {
        Ok(_) => Ok(()),
        // Servers may close the TCP connection without a close_notify after the response.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !out.is_empty() => Ok(()),
        Err(e) => Err(e),
    }
}

/// One TLS client session driven without sockets: bytes from the network go in through
/// [`Session::receive`], bytes for it come out of [`Session::encrypt`] and
/// [`Session::pending`].
pub(crate) struct Session(rustls::ClientConnection);

impl Session {
    pub(crate) fn new(c: &TlsClient) -> io::Result<Self> {
        let mut conn =
            rustls::ClientConnection::new(Arc::clone(&c.config), c.server_name.clone()).map_err(io::Error::other)?;
        // The generator's queue of framed messages bounds what waits here.
        conn.set_buffer_limit(None);
        Ok(Self(conn))
    }

    /// True until the handshake is done.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.0.is_handshaking()
    }

    /// Takes bytes read from the socket; appends what they decrypt to. Errors on a bad
    /// record or certificate (the alert to send is then in [`Session::pending`]); what
    /// decrypted before it is in `plain`. Returns true once the server closed the session
    /// (bytes after its close_notify are ignored).
    pub(crate) fn receive(&mut self, mut raw: &[u8], plain: &mut Vec<u8>) -> io::Result<bool> {
        while !raw.is_empty() {
            // Nothing is taken after the peer's close_notify.
            if self.0.read_tls(&mut raw)? == 0 {
                break;
            }
            let state = self.0.process_new_packets().map_err(io::Error::other)?;
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let at = plain.len();
                plain.resize(at + n, 0);
                self.0.reader().read_exact(&mut plain[at..])?;
            }
            if state.peer_has_closed() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Encrypts `plain` and appends the records to `out`.
    pub(crate) fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if !plain.is_empty() {
            self.0.writer().write_all(plain)?;
        }
        self.pending(out)
    }

    /// Appends what the session has to send on its own (handshake, alerts, close).
    pub(crate) fn pending(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        while self.0.wants_write() {
            self.0.write_tls(out)?;
        }
        Ok(())
    }

    /// True when the session has bytes of its own to send.
    pub(crate) fn wants_write(&self) -> bool {
        self.0.wants_write()
    }

    /// Queues the close_notify alert.
    pub(crate) fn close(&mut self) {
        self.0.send_close_notify();
    }
}

/// Parses a target list's scheme: `Some(host)` when every URL is `wss://` (the first one's
/// host is the name certificates are checked against), `None` when none is; mixed lists are
/// an error.
pub fn scheme_of(urls: &str) -> Result<Option<String>> {
    let urls: Vec<&str> = urls.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
    let tls = urls.iter().filter(|u| u.starts_with("wss://")).count();
    if tls == 0 {
        return Ok(None);
    }
    if tls != urls.len() {
        bail!("the targets mix wss:// and ws://: use one scheme for every node");
    }
    let rest = &urls[0]["wss://".len()..];
    let hostport = rest.split('/').next().unwrap_or(rest);
    let host = match hostport.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => hostport.rsplit_once(':').map_or(hostport, |(h, _)| h),
    };
    if host.is_empty() {
        bail!("no host in {:?}", urls[0]);
    }
    Ok(Some(host.to_owned()))
}

/// The [`TlsSpec`] for `urls`, with `ca_file`: none for `ws://`, an error for `wss://`
/// without one.
pub fn spec_for(urls: &str, ca_file: Option<PathBuf>) -> Result<Option<TlsSpec>> {
    match (scheme_of(urls)?, ca_file) {
        (None, None) => Ok(None),
        (None, Some(_)) => bail!("--ca-file is for wss:// targets"),
        (Some(_), None) => bail!("a wss:// target needs --ca-file: the server's certificate or its authority (PEM)"),
        // The file is read by `init`.
        (Some(server_name), Some(ca_file)) => Ok(Some(TlsSpec { ca_file, server_name })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_and_host_come_from_the_urls() {
        assert_eq!(scheme_of("ws://127.0.0.1:8080/ws").unwrap(), None);
        assert_eq!(scheme_of("127.0.0.1:8080").unwrap(), None);
        assert_eq!(scheme_of("wss://localhost:8443/ws").unwrap().as_deref(), Some("localhost"));
        assert_eq!(scheme_of("wss://a.example:1/ws, wss://b.example:2/ws").unwrap().as_deref(), Some("a.example"));
        assert_eq!(scheme_of("wss://[::1]:8443/ws").unwrap().as_deref(), Some("::1"));
        assert!(scheme_of("wss://a:1/ws,ws://b:2/ws").unwrap_err().to_string().contains("mix"));
        assert!(spec_for("wss://localhost:8443/ws", None).unwrap_err().to_string().contains("--ca-file"));
        assert!(spec_for("ws://localhost:8443/ws", Some("x.pem".into())).is_err());
    }
}
