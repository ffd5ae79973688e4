//! The page: static files, built into the binary (so `cargo run`, or a copied binary,
//! serves it from any working directory) or from `--static-dir`.
//!
//! A URL path becomes a file path only if every segment is a plain name: no `..`, no `.`,
//! no dotfile (`.env`, `.git/`), no backslash or NUL, none of these percent-encoded, and —
//! on disk — no symlink out of the directory. Anything else is `404`.

use std::path::{Component, Path, PathBuf};

/// The page, built into the binary.
const EMBEDDED: &[(&str, &[u8])] = &[
    ("index.html", include_bytes!("../../../static/index.html")),
    ("app.js", include_bytes!("../../../static/app.js")),
    ("connection.js", include_bytes!("../../../static/connection.js")),
    ("moderation.js", include_bytes!("../../../static/moderation.js")),
    ("panels.js", include_bytes!("../../../static/panels.js")),
    ("style.css", include_bytes!("../../../static/style.css")),
    ("stats.html", include_bytes!("../../../static/stats.html")),
    ("stats.js", include_bytes!("../../../static/stats.js")),
    ("stats.css", include_bytes!("../../../static/stats.css")),
];

/// Largest file served from `--static-dir`: a response is held whole in memory while it is
/// sent (see `exchange.rs`), so a file must stay well under that backstop.
pub const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024;

/// A file to send: its bytes and content type.
pub struct File {
    pub body: Vec<u8>,
    pub content_type: &'static str,
    /// An HTML page (gets the Content-Security-Policy).
    pub is_page: bool,
}

/// The file for `url_path`, or `None` (→ 404).
pub fn find(url_path: &str, static_dir: Option<&Path>) -> Option<File> {
    let rel = safe_relative_path(url_path)?;
    let body = match static_dir {
        None => {
            let name = rel.to_str()?;
            EMBEDDED.iter().find(|(n, _)| *n == name)?.1.to_vec()
        }
        Some(dir) => {
            // Symlinks inside the directory could still point out of it: check where the
            // file really is.
            let real = dir.join(&rel).canonicalize().ok()?;
            let root = dir.canonicalize().ok()?;
            let meta = std::fs::metadata(&real).ok()?;
            if !real.starts_with(&root) || !meta.is_file() {
                return None;
            }
            if meta.len() > MAX_FILE_BYTES {
                log::warn!("{}: not served: larger than {MAX_FILE_BYTES} bytes", real.display());
                return None;
            }
            std::fs::read(&real).ok()?
        }
    };
    let content_type = content_type(&rel);
    Some(File { body, content_type, is_page: content_type.starts_with("text/html") })
}

/// Decodes the URL path and checks every segment; `/` means `index.html`.
pub fn safe_relative_path(url_path: &str) -> Option<PathBuf> {
    let decoded = crate::net::query::percent_decode(url_path)?;
    let trimmed = decoded.strip_prefix('/')?;
    let rel = if trimmed.is_empty() { "index.html" } else { trimmed };
    if rel.contains(['\\', '\0']) || rel.ends_with('/') {
        return None;
    }
    let path = Path::new(rel);
    // A segment starting with '.' is `.`, `..` or a dotfile (`.env`, `.git`): never served.
    if !path.components().all(|c| matches!(c, Component::Normal(_)))
        || rel.split('/').any(|s| s.is_empty() || s.starts_with('.'))
    {
        return None;
    }
    Some(path.to_path_buf())
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_paths() {
        assert_eq!(safe_relative_path("/"), Some(PathBuf::from("index.html")));
        assert_eq!(safe_relative_path("/app.js"), Some(PathBuf::from("app.js")));
        assert_eq!(safe_relative_path("/img/a%20b.png"), Some(PathBuf::from("img/a b.png")));
        assert_eq!(safe_relative_path("/a.b/c.d"), Some(PathBuf::from("a.b/c.d")));
    }

    #[test]
    fn rejects_traversal_and_dotfiles_in_every_spelling() {
        for bad in [
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E%2Fetc%2Fpasswd",
            "/..%2fetc/passwd",
            "/%252e%252e/etc/passwd",
            "/..\\etc\\passwd",
            "/.%2e/x",
            "/./index.html",
            "//etc/passwd",
            "/a//b",
            "/x%00.html",
            "/%zz",
            "/%c0%ae%c0%ae/x",
            "/dir/",
            "/.env",
            "/.git/config",
            "/%2egit/config",
            "/sub/.htpasswd",
        ] {
            assert_eq!(safe_relative_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_embedded_page_is_found() {
        let page = find("/", None).unwrap();
        assert!(page.is_page && page.content_type.starts_with("text/html"));
        assert!(find("/stats.css", None).is_some());
        assert!(find("/nope.js", None).is_none());
    }

    #[test]
    fn static_dir_files_up_to_2_mib_are_served_larger_ones_are_not() {
        let dir = std::env::temp_dir().join(format!("threadchat-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(MAX_FILE_BYTES, 2 * 1024 * 1024);
        std::fs::write(dir.join("exact.txt"), vec![b'x'; MAX_FILE_BYTES as usize]).unwrap();
        std::fs::write(dir.join("over.txt"), vec![b'x'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let exact = find("/exact.txt", Some(&dir));
        let over = find("/over.txt", Some(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(exact.map(|f| f.body.len()), Some(MAX_FILE_BYTES as usize));
        assert!(over.is_none());
    }

    /// With `nosniff`, a wrong type breaks the page (a script served as octet-stream does
    /// not run), and a type chosen by content sniffing could run what should not.
    #[test]
    fn content_types_follow_the_extension() {
        for (file, expected) in [
            ("a.html", "text/html; charset=utf-8"),
            ("a.htm", "text/html; charset=utf-8"),
            ("a.js", "text/javascript; charset=utf-8"),
            ("a.mjs", "text/javascript; charset=utf-8"),
            ("a.css", "text/css; charset=utf-8"),
            ("a.json", "application/json"),
            ("a.svg", "image/svg+xml"),
            ("a.png", "image/png"),
            ("a.ico", "image/x-icon"),
            ("a.txt", "text/plain; charset=utf-8"),
            ("a.exe", "application/octet-stream"),
            ("noext", "application/octet-stream"),
        ] {
            assert_eq!(content_type(Path::new(file)), expected, "{file}");
        }
    }
}
