//! The browser editor's files (`web/app`, built into `web/app/dist` by `npm run build`),
//! served from memory the way a CDN in front of Tandem expects.
//!
//! The directory is read once at start: every file is kept in memory with a gzip copy (when
//! that is smaller) and an ETag. Files under `assets/` have content-hashed names (Vite names
//! them so) and are served `public, max-age=31536000, immutable`; the page itself (`index.html`,
//! also at every app route) is `no-cache`, so a CDN caches everything but the page and a new
//! build reaches every browser on its next load. The page carries a strict
//! Content-Security-Policy: scripts, styles, fonts and connections from this origin only, no
//! inline scripts, and images from this origin or `data:`/`blob:` (pasted images).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// Most files read from the directory.
const MAX_FILES: usize = 2_000;
/// Most bytes read from the directory in all.
const MAX_TOTAL_BYTES: u64 = 64 << 20;

/// The page's Content-Security-Policy. `connect-src 'self'` covers the WebSocket to the same
/// host (CSP level 3); `style-src 'self'` holds because Quill and quill-cursors set styles
/// through the CSSOM, which CSP does not restrict, and Vite extracts every stylesheet.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// One file, ready to send.
#[derive(Debug)]
struct Asset {
    body: Bytes,
    gzip: Option<Bytes>,
    content_type: &'static str,
    etag: HeaderValue,
    /// Content-hashed (under `assets/`): cached for a year.
    immutable: bool,
}

/// The built editor, in memory.
#[derive(Debug)]
pub struct WebAssets {
    dir: PathBuf,
    files: HashMap<String, Asset>,
}

impl WebAssets {
    /// Reads `dir` (a Vite build: `index.html` and `assets/`).
    pub fn load(dir: &Path) -> Result<Self, String> {
        let index = dir.join("index.html");
        if !index.is_file() {
            return Err(format!("{} has no index.html (build it with `npm run build` in web/)", dir.display()));
        }
        let mut files = HashMap::new();
        let mut total = 0u64;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(at) = stack.pop() {
            let entries = std::fs::read_dir(&at).map_err(|e| format!("reading {}: {e}", at.display()))?;
            for entry in entries {
                let entry = entry.map_err(|e| format!("reading {}: {e}", at.display()))?;
                let path = entry.path();
                let kind = entry.file_type().map_err(|e| format!("{}: {e}", path.display()))?;
                if kind.is_dir() {
                    stack.push(path);
                    continue;
                }
                if !kind.is_file() {
                    continue;
                }
                let name = path
                    .strip_prefix(dir)
                    .ok()
                    .and_then(|p| p.to_str())
                    .map(|p| p.replace(std::path::MAIN_SEPARATOR, "/"))
                    .ok_or_else(|| format!("{}: not a UTF-8 name", path.display()))?;
                if files.len() >= MAX_FILES {
                    return Err(format!("{} holds over {MAX_FILES} files: is it the editor's build?", dir.display()));
                }
                let body = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
                total += body.len() as u64;
                if total > MAX_TOTAL_BYTES {
                    return Err(format!(
                        "{} holds over {} MiB: is it the editor's build?",
                        dir.display(),
                        MAX_TOTAL_BYTES >> 20
                    ));
                }
                files.insert(name.clone(), Asset::new(&name, body));
            }
        }
        Ok(Self { dir: dir.to_path_buf(), files })
    }

    /// The directory the files came from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when there are none (never, once loaded: `index.html` is required).
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The page (for every app route).
    pub fn page(&self, headers: &HeaderMap) -> Response {
        self.serve("index.html", headers)
    }

    /// A file by its path under the directory; 404 when there is none.
    pub fn serve(&self, name: &str, headers: &HeaderMap) -> Response {
        let Some(asset) = self.files.get(name) else {
            return (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "no such file\n")
                .into_response();
        };
        let cache = if asset.immutable { "public, max-age=31536000, immutable" } else { "no-cache" };
        let mut out = HeaderMap::new();
        out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        out.insert(header::ETAG, asset.etag.clone());
        out.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        out.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if asset.content_type.starts_with("text/html") {
            out.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
            out.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
            out.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        }
        let not_modified = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == asset.etag || t.trim() == "*"));
        if not_modified {
            return (StatusCode::NOT_MODIFIED, out).into_response();
        }
        out.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        let gzip_ok = headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| accepts_gzip(t.trim())));
        match (&asset.gzip, gzip_ok) {
            (Some(gz), true) => {
                out.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                (out, gz.clone()).into_response()
            }
            _ => (out, asset.body.clone()).into_response(),
        }
    }
}

/// Whether one `Accept-Encoding` entry accepts gzip (`gzip`, `gzip;q=0.5`, not `gzip;q=0`).
fn accepts_gzip(entry: &str) -> bool {
    let mut parts = entry.split(';');
    if !parts.next().is_some_and(|c| c.trim().eq_ignore_ascii_case("gzip")) {
        return false;
    }
    parts.all(|p| {
        let p = p.trim();
        p.strip_prefix("q=").is_none_or(|q| q.trim().parse::<f32>().is_ok_and(|q| q > 0.0))
    })
}

impl Asset {
    fn new(name: &str, body: Vec<u8>) -> Self {
        let content_type = content_type(name);
        let compressible = content_type.starts_with("text/")
            || content_type.starts_with("application/javascript")
            || content_type.starts_with("application/json")
            || content_type.starts_with("image/svg");
        let gzip = compressible.then(|| gzip(&body)).filter(|gz| gz.len() < body.len()).map(Bytes::from);
        let digest = <sha2::Sha256 as sha2::Digest>::digest(&body);
        let tag: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            body: Bytes::from(body),
            gzip,
            content_type,
            etag: HeaderValue::from_str(&format!("\"{tag}\"")).expect("hex is a valid header value"),
            immutable: name.starts_with("assets/"),
        }
    }
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(body).expect("writing to memory");
    enc.finish().expect("writing to memory")
}

/// The Content-Type for a file name.
fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "application/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build() -> (tempfile::TempDir, WebAssets) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("index.html"),
            "<!doctype html><script type=module src=/assets/app-1a2b.js></script>".repeat(20),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("assets")).unwrap();
        std::fs::write(dir.path().join("assets/app-1a2b.js"), "console.log('hi');".repeat(100)).unwrap();
        std::fs::write(dir.path().join("assets/logo-9f9f.png"), [0x89, b'P', b'N', b'G']).unwrap();
        let assets = WebAssets::load(dir.path()).unwrap();
        (dir, assets)
    }

    fn get(assets: &WebAssets, name: &str, headers: &[(&'static str, &str)]) -> Response {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        assets.serve(name, &h)
    }

    #[test]
    fn hashed_assets_are_immutable_and_the_page_is_not() {
        let (_dir, assets) = build();
        assert_eq!(assets.len(), 3);
        let js = get(&assets, "assets/app-1a2b.js", &[]);
        assert_eq!(js.status(), StatusCode::OK);
        assert_eq!(js.headers()[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
        assert_eq!(js.headers()[header::CONTENT_TYPE], "application/javascript; charset=utf-8");
        assert!(js.headers().get(header::CONTENT_SECURITY_POLICY).is_none());
        let page = assets.page(&HeaderMap::new());
        assert_eq!(page.headers()[header::CACHE_CONTROL], "no-cache");
        assert_eq!(page.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        assert!(!CSP.contains("unsafe-inline") && !CSP.contains("unsafe-eval"));
        assert_eq!(get(&assets, "assets/nope.js", &[]).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn gzip_when_accepted_and_smaller() {
        let (_dir, assets) = build();
        let plain = get(&assets, "assets/app-1a2b.js", &[("accept-encoding", "br, gzip;q=0")]);
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let gz = get(&assets, "assets/app-1a2b.js", &[("accept-encoding", "br, gzip")]);
        assert_eq!(gz.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(gz.headers()[header::VARY], "Accept-Encoding");
        // Images are not compressed again.
        let png = get(&assets, "assets/logo-9f9f.png", &[("accept-encoding", "gzip")]);
        assert!(png.headers().get(header::CONTENT_ENCODING).is_none());
    }

    #[test]
    fn etags_answer_304() {
        let (_dir, assets) = build();
        let first = get(&assets, "assets/app-1a2b.js", &[]);
        let tag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
        let again = get(&assets, "assets/app-1a2b.js", &[("if-none-match", &tag)]);
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(get(&assets, "assets/app-1a2b.js", &[("if-none-match", "\"other\"")]).status(), StatusCode::OK);
    }

    #[test]
    fn a_directory_without_a_page_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = WebAssets::load(dir.path()).unwrap_err();
        assert!(err.contains("no index.html"), "{err}");
    }
}
