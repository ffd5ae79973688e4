//! The HTTP listener: page, API, health, traversal, and 426 for misplaced upgrades.

use crate::support::*;

#[test]
fn serves_the_page_with_content_types() {
    let server = TestServer::start();
    for (path, ctype, needle) in [
        ("/", "text/html; charset=utf-8", "<title>threadchat</title>"),
        ("/index.html", "text/html; charset=utf-8", "id=\"messages\""),
        ("/app.js", "text/javascript; charset=utf-8", "textContent"),
        ("/style.css", "text/css; charset=utf-8", ".status"),
    ] {
        let r = http_get(server.http, path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("Content-Type"), Some(ctype), "{path}");
        assert!(r.text().contains(needle), "{path} should contain {needle}");
    }
}

#[test]
fn healthz_and_config() {
    let server = TestServer::start();
    let r = http_get(server.http, "/healthz");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));

    let r = http_get(server.http, "/api/config");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    // The page connects to its own origin (the test client's Host is the HTTP address).
    assert_eq!(v["ws_url"], format!("ws://{}/ws", server.http));
    assert_eq!(v["max_message_bytes"], 65536);

    // The page's host is reused, so a browser that came through a name gets that name back.
    let r = http_request(server.http, "GET", "/api/config", &["Host: chat.example:8080"]);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["ws_url"], "ws://chat.example:8080/ws");
    // A Host that is not a host name is not echoed into the URL.
    for bad in ["evil.example/\"><script>", "a b:1", "x:99999999"] {
        let r = http_request(server.http, "GET", "/api/config", &[&format!("Host: {bad}")]);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["ws_url"], format!("ws://{}/ws", server.http), "{bad}");
    }

    let r = http_get(server.http, "/api/nothing");
    assert_eq!(r.status, 404);
}

#[test]
fn public_ws_url_overrides_the_derived_one() {
    let server = TestServer::with(|c| c.public_ws_url = Some("wss://chat.example.org/ws".into()));
    let v: serde_json::Value = serde_json::from_slice(&http_get(server.http, "/api/config").body).unwrap();
    assert_eq!(v["ws_url"], "wss://chat.example.org/ws");
}

#[test]
fn traversal_attempts_get_404() {
    // Serve from a real directory next to a secret file, so an escape would be visible.
    // A TempDir: a fresh directory even if an earlier run with this pid left one behind.
    let dir = TempDir::new();
    let root = dir.0.clone();
    let www = root.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(root.join("secret.txt"), "TOP SECRET").unwrap();
    std::fs::write(www.join("index.html"), "<p>home</p>").unwrap();
    // The escape case must really be a symlink out of the directory, not a missing file.
    std::os::unix::fs::symlink(root.join("secret.txt"), www.join("link.txt")).expect("symlink");
    let server = TestServer::with(|c| c.static_dir = Some(www.clone()));

    assert_eq!(http_get(server.http, "/").text(), "<p>home</p>");
    for path in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/..%2fsecret.txt",
        "/..%5csecret.txt",
        "/%252e%252e/secret.txt",
        "/./../secret.txt",
        "//secret.txt",
        "/link.txt",
        "/index.html%00.txt",
        "/nope.html",
        "/..",
    ] {
        let r = http_get(server.http, path);
        assert_eq!(r.status, 404, "{path} must be 404");
        assert!(!r.text().contains("TOP SECRET"), "{path} leaked the file");
    }
    // The embedded copy refuses the same paths.
    let embedded = TestServer::start();
    for path in ["/../Cargo.toml", "/%2e%2e/Cargo.toml", "/src/main.rs"] {
        assert_eq!(http_get(embedded.http, path).status, 404, "{path}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn the_http_port_speaks_websocket_too_and_the_ws_port_http() {
    let server = TestServer::start();
    let mut on_http = Client::connect(&format!("ws://{}/ws", server.http));
    let mut on_ws = server.chat();
    on_ws.say("across ports");
    assert_eq!(on_http.recv_type("message")["text"], "across ports");
    assert_eq!(on_ws.recv_type("message")["text"], "across ports");
    // /echo too.
    let mut echo = connect_raw(&format!("ws://{}/echo", server.http)).unwrap();
    echo.send(tungstenite::Message::text("ping")).unwrap();
    assert_eq!(echo.read().unwrap(), tungstenite::Message::text("ping"));
    // Plain HTTP on either port: the page and the API; a WebSocket URL opened as a page
    // gets 426 saying so.
    for addr in [server.http, server.ws] {
        assert_eq!(http_get(addr, "/healthz").status, 200);
        assert_eq!(http_get(addr, "/").status, 200);
        let r = http_get(addr, "/ws");
        assert_eq!((r.status, r.header("Upgrade")), (426, Some("websocket")), "{addr}");
    }
}

#[test]
fn other_methods_are_405() {
    let server = TestServer::start();
    assert_eq!(http_request(server.http, "DELETE", "/", &[]).status, 405);
}
