//! Access tokens (JWT, HS256, one hour, verified without a database round trip) and refresh
//! tokens (256 random bits, stored hashed, thirty days, rotated on every use).
//!
//! Signing keys live in `keys.json` in the data directory (mode 0600, made on first start)
//! or in a file the configuration names. Each key has an id (`kid`, written in every token's
//! header): to rotate, add a key and make it `current`; tokens signed with the old one verify
//! until it is removed. Every node of a cluster reads the same file. HS256 because the
//! signer and the verifiers are the same operator's servers, and a core verifies each
//! `hello` in about a microsecond (an Ed25519 verification costs ~50 µs).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tandem_net::access::{Identity, Verifier};

use crate::error::{Error, Result};
use crate::now_ms;

/// The `iss` and `aud` of Tandem's access tokens.
pub const ISSUER: &str = "tandem";
/// See [`ISSUER`].
pub const AUDIENCE: &str = "tandem";

/// An access token's claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The user's id.
    pub sub: String,
    /// The user's display name (shown to others in presence).
    pub name: String,
    /// Expires, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued, seconds since the Unix epoch.
    pub iat: u64,
    /// Not valid before, seconds since the Unix epoch.
    pub nbf: u64,
    /// The token's unique id.
    pub jti: String,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    current: String,
    keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    /// 32 or more random bytes, base64url.
    secret: String,
}

/// The signing keys.
pub struct Keys {
    current: (String, EncodingKey),
    verify: HashMap<String, DecodingKey>,
    validation: Validation,
    access_ttl: Duration,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("Keys").field("current", &self.current.0).field("kids", &self.verify.len()).finish()
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS has randomness");
    b
}

/// Writes a new secret file at `path`, readable by its owner only, synced.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).map_err(|e| Error::Keys(format!("creating {}: {e}", path.display())))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| Error::Keys(format!("writing {}: {e}", path.display())))
}

/// Refuses a secret file that others may read.
pub(crate) fn check_private(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(|e| Error::Keys(e.to_string()))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(Error::Keys(format!(
                "{} is readable by others (mode {:o}): chmod 600 it",
                path.display(),
                mode & 0o777
            )));
        }
    }
    Ok(())
}

impl Keys {
    /// Reads the key file at `path`, making one with a fresh key when it is missing.
    pub fn load_or_create(path: &Path, access_ttl: Duration) -> Result<Self> {
        if !path.exists() {
            let file = KeyFile {
                current: "k1".into(),
                keys: vec![StoredKey { kid: "k1".into(), secret: URL_SAFE_NO_PAD.encode(random_bytes::<32>()) }],
            };
            write_private(path, &serde_json::to_vec_pretty(&file).expect("serializes"))?;
            tracing::info!("made a new signing key in {}", path.display());
        }
        check_private(path)?;
        let bytes = std::fs::read(path).map_err(|e| Error::Keys(format!("reading {}: {e}", path.display())))?;
        let file: KeyFile =
            serde_json::from_slice(&bytes).map_err(|e| Error::Keys(format!("{}: {e}", path.display())))?;
        let mut secrets = Vec::new();
        for k in file.keys {
            let secret = URL_SAFE_NO_PAD
                .decode(k.secret.trim_end_matches('='))
                .map_err(|e| Error::Keys(format!("key {}: {e}", k.kid)))?;
            secrets.push((k.kid, secret));
        }
        Self::from_secrets(&file.current, secrets, access_ttl)
    }

    /// Keys from `(kid, secret)` pairs; `current` signs.
    pub fn from_secrets(current: &str, secrets: Vec<(String, Vec<u8>)>, access_ttl: Duration) -> Result<Self> {
        let mut verify = HashMap::new();
        let mut signing = None;
        for (kid, secret) in secrets {
            if secret.len() < 32 {
                return Err(Error::Keys(format!("key {kid}: at least 32 bytes of secret, not {}", secret.len())));
            }
            let bad = |e: jsonwebtoken::errors::Error| Error::Keys(format!("key {kid}: {e}"));
            if kid == current {
                signing = Some((kid.clone(), EncodingKey::from_secret(&secret).map_err(bad)?));
            }
            let bad = |e: jsonwebtoken::errors::Error| Error::Keys(format!("key {kid}: {e}"));
            verify.insert(kid.clone(), DecodingKey::from_secret(&secret).map_err(bad)?);
        }
        let current = signing.ok_or_else(|| Error::Keys(format!("no key {current:?} (the current one)")))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 0;
        Ok(Self { current, verify, validation, access_ttl })
    }

    /// How long access tokens are valid.
    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// A fresh access token for a user; returns it with its expiry (ms since the epoch).
    pub fn sign(&self, user: &str, name: &str) -> (String, u64) {
        let now = u64::try_from(now_ms()).unwrap_or(0) / 1000;
        let exp = now + self.access_ttl.as_secs();
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: user.into(),
            name: name.into(),
            exp,
            iat: now,
            nbf: now,
            jti: URL_SAFE_NO_PAD.encode(random_bytes::<16>()),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.current.0.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.current.1).expect("HS256 signing cannot fail");
        (token, exp * 1000)
    }

    /// The claims of a valid token, or why it is not one.
    pub fn verify_claims(&self, token: &str) -> Result<Claims, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token ({e})"))?;
        if header.alg != Algorithm::HS256 {
            return Err(format!("algorithm {:?} is not accepted", header.alg));
        }
        let kid = header.kid.ok_or("the token names no key (kid)")?;
        let key = self.verify.get(&kid).ok_or_else(|| format!("unknown key id {kid:?}"))?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => "the token expired".to_owned(),
                K::ImmatureSignature => "the token is not valid yet".to_owned(),
                K::InvalidSignature => "bad signature".to_owned(),
                K::InvalidAudience => "wrong audience".to_owned(),
                K::InvalidIssuer => "wrong issuer".to_owned(),
                _ => format!("invalid token ({e})"),
            }
        })?;
        Ok(data.claims)
    }
}

/// Verifies `hello` and `refresh` tokens on the cores.
#[derive(Debug, Clone)]
pub struct TokenVerifier(pub Arc<Keys>);

impl Verifier for TokenVerifier {
    fn verify(&self, token: &str) -> Result<Identity, String> {
        let claims = self.0.verify_claims(token)?;
        let now = u64::try_from(now_ms()).unwrap_or(0);
        let expires_at_ms = claims.exp.saturating_mul(1000);
        Ok(Identity {
            user: claims.sub,
            name: claims.name,
            valid_for: Duration::from_millis(expires_at_ms.saturating_sub(now)),
            expires_at_ms,
        })
    }
}

/// A new refresh token: the token (for the client) and its hash (for the store).
pub fn new_refresh_token() -> (String, String) {
    let token = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    let hash = hash_refresh_token(&token);
    (token, hash)
}

/// A refresh token's stored form: SHA-256, hex (a fast hash suffices for 256 random bits).
pub fn hash_refresh_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
