//! The server harness shared by the server tests: a model repository of symlinks, the
//! server binary started on a free loopback port (killed when dropped), and one HTTP/1.1
//! request per connection. Each test file that uses it declares `mod common;` too.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;

pub fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The server binary: cargo builds it for this test (the test needs the `server` feature).
pub fn server_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_modelhost-serve"))
}

/// A model repository of symlinks: minilm/1, digits/1 (digits-v1), digits/2 (digits).
pub fn model_repository(tag: &str, extra: &[(&str, &Path)]) -> PathBuf {
    let root = std::env::temp_dir().join(format!("modelhost-serve-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let link = |target: &Path, name: &str, version: &str| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(target, dir.join(version)).unwrap();
    };
    link(&common::minilm_dir(), "minilm", "1");
    link(
        &manifest_dir().join("examples/assets/digits-v1"),
        "digits",
        "1",
    );
    link(
        &manifest_dir().join("examples/assets/digits"),
        "digits",
        "2",
    );
    for (name, dir) in extra {
        link(dir, name, "1");
    }
    root
}

/// A running server; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub root: PathBuf,
}

impl Server {
    pub fn start(tag: &str, extra_args: &[&str]) -> Server {
        Server::start_with(tag, extra_args, &[])
    }

    /// A server whose repository also holds `extra` models (name, version 1 directory).
    pub fn start_with(tag: &str, extra_args: &[&str], extra: &[(&str, &Path)]) -> Server {
        let root = model_repository(tag, extra);
        let child = Command::new(server_binary())
            .arg("--models")
            .arg(&root)
            .args(["--addr", "127.0.0.1:0"])
            .args(extra_args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server");
        Server::attach(child, root)
    }

    /// Reads the address from a started server's first line of stdout and waits until it is
    /// ready.
    pub fn attach(mut child: Child, root: PathBuf) -> Server {
        let mut line = String::new();
        let stdout = child.stdout.take().expect("the server's stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's first line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"))
            .to_string();
        let server = Server { child, addr, root };
        // Ready once every model has warmed up; bounded so a broken server fails the test.
        let started = Instant::now();
        while server.get("/v2/health/ready").0 != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the server never became ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn request(&self, method: &str, path: &str, headers: &[&str], body: &[u8]) -> Response {
        request(&self.addr, method, path, headers, body)
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    /// A gauge of `/metrics` summed over the versions of `model`.
    pub fn gauge(&self, name: &str, model: &str) -> f64 {
        let (_, _, metrics) = self.get("/metrics");
        let prefix = format!(r#"{name}{{model="{model}","#);
        metrics
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .map(|l| {
                let value = l.rsplit(' ').next().unwrap_or_default();
                value
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("a gauge value in {l:?}"))
            })
            .sum()
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Response {
        self.request("POST", path, &[], body.to_string().as_bytes())
    }

    /// POSTs `body` as it is, with `content_type`.
    pub fn post_raw(&self, path: &str, content_type: &str, body: &[u8]) -> Response {
        let header = format!("Content-Type: {content_type}");
        self.request("POST", path, &[&header], body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// (status, headers in lower case, body).
pub type Response = (u16, String, String);

/// One HTTP/1.1 request on its own connection.
pub fn request(addr: &str, method: &str, path: &str, headers: &[&str], body: &[u8]) -> Response {
    let (status, head, body) = request_bytes(addr, method, path, headers, body);
    let body = String::from_utf8(body).expect("a UTF-8 answer");
    (status, head, body)
}

/// [`request`], the body as bytes (binary tensor data is not UTF-8).
pub fn request_bytes(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect to the server");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    // JSON unless the caller says otherwise.
    if !(headers.iter()).any(|h| h.to_ascii_lowercase().starts_with("content-type:")) {
        head.push_str("Content-Type: application/json\r\n");
    }
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8(raw[..split].to_vec()).expect("a UTF-8 head");
    let body = &raw[split + 4..];
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_vec()
    };
    (status, head.to_ascii_lowercase(), body)
}

pub fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..line]).unwrap_or("0");
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let rest = &body[line + 2..];
        out.extend_from_slice(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

pub fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The held-back digits (every fifth row of digits.csv) and their labels.
pub fn held_back_digits() -> (Vec<Vec<f32>>, Vec<usize>) {
    let text =
        std::fs::read_to_string(manifest_dir().join("examples/assets/digits/digits.csv")).unwrap();
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate().filter(|(i, _)| i % 5 == 4) {
        let values: Vec<f32> = line.split(',').map(|v| v.trim().parse().unwrap()).collect();
        assert_eq!(values.len(), 65, "digits.csv line {}", i + 1);
        labels.push(values[64] as usize);
        images.push(values[..64].to_vec());
    }
    (images, labels)
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

/// A cross-encoder: MiniLM with a one-output head, as sentence-transformers saves one.
pub fn cross_encoder_dir() -> PathBuf {
    let dir = common::scratch_dir("cross-encoder-model");
    let weight: Vec<f32> = (0..384).map(|i| (i as f32 * 0.37).sin() * 0.3).collect();
    common::write_text_classifier(&dir, &["LABEL_0"], weight, vec![0.2], json!({}));
    dir
}

/// The digits MLP read from PNG/JPEG files: its files and a `modelhost.json` naming the
/// kind (its `model.json` alone says MLP classifier over pixel values).
pub fn image_dir() -> PathBuf {
    let dir = common::scratch_dir("image-model");
    let digits = manifest_dir().join("examples/assets/digits");
    for file in [
        "model.json",
        "model.safetensors",
        "preprocessor_config.json",
    ] {
        std::os::unix::fs::symlink(digits.join(file), dir.join(file)).unwrap();
    }
    std::fs::write(
        dir.join("modelhost.json"),
        r#"{"kind": "image-classifier"}"#,
    )
    .unwrap();
    dir
}
