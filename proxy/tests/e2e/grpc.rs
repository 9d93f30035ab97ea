//! gRPC through the proxy with a real client and server (Python grpcio, Debian's
//! python3-grpcio): HTTP/2 cleartext on both sides, unary and streaming calls, trailers
//! (status and metadata), and a denied client seeing a gRPC status rather than a hang.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::harness::*;

/// Debian's interpreter, which has python3-grpcio (not whatever `python3` is first on PATH).
const PYTHON: &str = "/usr/bin/python3";

fn script(name: &str) -> String {
    format!("{}/tests/e2e/grpc/{name}", env!("CARGO_MANIFEST_DIR"))
}

struct GrpcServer {
    child: Child,
    port: u16,
}

impl GrpcServer {
    fn start() -> Self {
        let mut child = Command::new(PYTHON)
            .arg(script("server.py"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (python3-grpcio is installed by scripts/test.sh)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!("the gRPC server printed no port: {line:?} (is python3-grpcio installed?)")
        });
        Self { child, port }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn call_all(target: String, authority: &str) -> Value {
    let authority = authority.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(PYTHON)
            .arg(script("client.py"))
            .args([&target, &authority])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "client output ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test]
async fn grpc_calls_stream_and_carry_trailers_through_the_proxy() {
    let server = GrpcServer::start();
    let upstream = format!("http://127.0.0.1:{}", server.port);
    let proxy = ProxyBuilder::new(&format!(
        "services:\n  - id: grpc\n    protocol: http\n    hosts: [grpc.test]\n    upstream: {upstream}\n    upstream_protocol: h2c\n  - id: closed\n    protocol: http\n    hosts: [closed.test]\n    upstream: {upstream}\n    upstream_protocol: h2c\n    restrictions:\n      cidr_allow: [10.0.0.0/8]\n"
    ))
    .start()
    .await;
    let target = proxy.http_addr().to_string();

    let direct = call_all(format!("127.0.0.1:{}", server.port), "grpc.test").await;
    let proxied = call_all(target.clone(), "grpc.test").await;
    let expected = json!({
        "unary": "echo:hi",
        "trailers": {"x-trailer": "t1"},
        "stream": ["0", "1", "2", "3", "4"],
        "bidi": ["bidi:a", "bidi:b", "bidi:c"],
        "fail": {"code": "PERMISSION_DENIED", "details": "no entry"},
    });
    assert_eq!(direct, expected, "the server itself");
    assert_eq!(proxied, expected, "through the proxy");

    // The proxy's own 403 reaches a gRPC client as PERMISSION_DENIED, not as a broken stream.
    let denied = call_all(target, "closed.test").await;
    assert_eq!(denied["error"]["code"], "PERMISSION_DENIED", "{denied}");

    let entries = proxy.wait_entries(6).await;
    let paths = |service: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e["service_id"] == service)
            .map(|e| format!("{} {}", e["path"].as_str().unwrap_or(""), e["status"]))
            .collect()
    };
    let grpc = paths("grpc");
    for call in ["Unary", "Stream", "Bidi", "Fail"] {
        assert!(
            grpc.contains(&format!("/test.Echo/{call} 200")),
            "{call} is logged: {grpc:?}"
        );
    }
    assert!(
        paths("closed")
            .iter()
            .any(|p| p.starts_with("/test.Echo/") && p.ends_with(" 403")),
        "{:?}",
        paths("closed")
    );
}
