//! Headless Chromium for the tests: a one-shot screenshot, and a DevTools-protocol session that
//! runs JavaScript in a live page (to drive the latent explorer).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The headless browser: `VAELAB_CHROMIUM`, else `chromium` / `chromium-browser` / `google-chrome`
/// on PATH. CI installs Debian's `chromium`.
pub fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VAELAB_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        let ok = Command::new(name).arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
        ok.then(|| PathBuf::from(name))
    })
}

/// The browser, or `None` to skip; under `VAELAB_REQUIRE_DATA` (CI) a missing browser fails.
pub fn chromium_or_skip(what: &str) -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        assert!(
            std::env::var_os("VAELAB_REQUIRE_DATA").is_none(),
            "Chromium is needed for {what} (apt-get install chromium, or set VAELAB_CHROMIUM)"
        );
        eprintln!("skipping {what}: no chromium on PATH");
    }
    found
}

const FLAGS: [&str; 5] = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-dev-shm-usage"];

/// Renders `url` at `width`×`height` into `out` (PNG).
pub fn screenshot(browser: &Path, url: &str, out: &Path, (width, height): (u32, u32)) {
    let output = Command::new(browser)
        .args(FLAGS)
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", out.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(out.exists(), "no screenshot from {}: {}", browser.display(), String::from_utf8_lossy(&output.stderr));
}

/// A page open in headless Chromium, driven over the DevTools protocol.
pub struct Devtools {
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next_id: u64,
    child: Child,
    profile: PathBuf,
}

/// A plain HTTP GET (the DevTools target list).
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw); // a timeout ends a kept-alive response
    let text = String::from_utf8_lossy(&raw).to_string();
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

impl Devtools {
    pub fn open(browser: &Path, url: &str, (width, height): (u32, u32), profile: PathBuf) -> Devtools {
        let mut child = Command::new(browser)
            .args(FLAGS)
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--window-size={width},{height}"))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Chromium prints "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…" on stderr.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let port: u16 = loop {
            let line = lines.next().expect("chromium exited before DevTools listened").unwrap();
            if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                break rest.split('/').next().unwrap().parse().unwrap();
            }
        };
        std::thread::spawn(move || lines.for_each(drop)); // keep draining stderr
        let find_page = || -> Option<String> {
            let list: serde_json::Value = serde_json::from_str(&http_get(port, "/json/list")?).ok()?;
            let page = list.as_array()?.iter().find(|t| t["type"] == "page")?.clone();
            page["webSocketDebuggerUrl"].as_str().map(str::to_string)
        };
        let page_ws = (0..100)
            .find_map(|_| {
                let found = find_page();
                if found.is_none() {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                found
            })
            .expect("no page target");
        let (ws, _) = tungstenite::connect(page_ws.as_str()).unwrap();
        Devtools { ws, next_id: 1, child, profile }
    }

    /// Sends one DevTools command and returns its result.
    pub fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = serde_json::json!({ "id": id, "method": method, "params": params });
        self.ws.send(tungstenite::Message::Text(msg.to_string())).unwrap();
        loop {
            let reply = self.ws.read().unwrap();
            let tungstenite::Message::Text(text) = reply else { continue };
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method} failed: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// Evaluates a JavaScript expression (awaiting a promise) and returns its JSON value.
    pub fn eval(&mut self, expression: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
        );
        assert!(r.get("exceptionDetails").is_none(), "script failed: {}", r["exceptionDetails"]);
        r["result"]["value"].clone()
    }

    /// Saves the page as it looks now.
    pub fn screenshot(&mut self, out: &Path) {
        use base64::Engine;
        let r = self.call("Page.captureScreenshot", serde_json::json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().unwrap()).unwrap();
        std::fs::write(out, png).unwrap();
    }
}

impl Drop for Devtools {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Where tests leave files for people to look at: `target/test-artifacts/`.
pub fn artifacts() -> PathBuf {
    let dir = crate::specs::workspace().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
