//! A scripted stand-in for the LAPI, for what a real one cannot do: garbage, truncation,
//! errors, slowness, huge answers. Each poll takes the next reply; the last one repeats.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

#[derive(Clone, Debug)]
pub enum Reply {
    Json(String),
    Status(u16, &'static str),
    Slow(Duration, String),
    /// Sends the first half of the body, then breaks the connection.
    Truncated(String),
    /// A JSON string value of this many bytes, streamed.
    HugeString(u64),
    /// A valid start, then this many bytes of whitespace, streamed.
    HugePadding(u64),
    /// The body one byte at a time, one every interval: never silent, never done.
    Trickle(Duration, String),
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub startup: bool,
    pub user_agent: String,
    pub api_key: String,
    pub query: String,
}

pub struct FakeLapi {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub usage: Arc<UsageEndpoint>,
    task: tokio::task::JoinHandle<()>,
}

/// `POST /v1/usage-metrics`: what was pushed, and how to answer (statuses in turn, then 201).
#[derive(Default)]
pub struct UsageEndpoint {
    pub pushes: Mutex<Vec<(Seen, serde_json::Value)>>,
    pub replies: Mutex<VecDeque<u16>>,
}

impl UsageEndpoint {
    pub fn pushes(&self) -> Vec<(Seen, serde_json::Value)> {
        self.pushes.lock().unwrap().clone()
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|never| match never {}).boxed()
}

impl FakeLapi {
    pub async fn start(script: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let usage = Arc::new(UsageEndpoint::default());
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let (seen2, script2, usage2) = (seen.clone(), script.clone(), usage.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (seen, script, usage) = (seen2.clone(), script2.clone(), usage2.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (seen, script, usage) = (seen.clone(), script.clone(), usage.clone());
                        async move {
                            if req.uri().path() == "/v1/usage-metrics" {
                                return Ok::<_, Infallible>(usage_metrics(req, &usage).await);
                            }
                            Ok::<_, Infallible>(respond(req, &seen, &script).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            usage,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_requests(&self, n: usize) -> Vec<Seen> {
        crate::harness::poll(600, || Some(self.requests()).filter(|r| r.len() >= n))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "fake LAPI got {} requests, expected {n}",
                    self.requests().len()
                )
            })
    }
}

impl Drop for FakeLapi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn usage_metrics(
    req: Request<hyper::body::Incoming>,
    usage: &UsageEndpoint,
) -> Response<Body> {
    let h = |n: &str| crate::harness::header(&req, n);
    let seen = Seen {
        startup: false,
        user_agent: h("user-agent"),
        api_key: h("x-api-key"),
        query: format!("{} {}", req.method(), h("content-type")),
    };
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| serde_json::Value::String(format!("not JSON ({e}): {body:?}")));
    usage.pushes.lock().unwrap().push((seen, value));
    let status = usage.replies.lock().unwrap().pop_front().unwrap_or(201);
    Response::builder().status(status).body(full("")).unwrap()
}

async fn respond(
    req: Request<hyper::body::Incoming>,
    seen: &Mutex<Vec<Seen>>,
    script: &Mutex<VecDeque<Reply>>,
) -> Response<Body> {
    let query = req.uri().query().unwrap_or("").to_owned();
    let h = |n: &str| crate::harness::header(&req, n);
    seen.lock().unwrap().push(Seen {
        startup: query.contains("startup=true"),
        user_agent: h("user-agent"),
        api_key: h("x-api-key"),
        query: query.clone(),
    });
    let reply = {
        let mut s = script.lock().unwrap();
        if s.len() > 1 {
            s.pop_front().unwrap()
        } else {
            s.front()
                .cloned()
                .unwrap_or(Reply::Json(r#"{"new":null,"deleted":null}"#.into()))
        }
    };
    match reply {
        Reply::Json(body) => Response::new(full(body)),
        Reply::Status(code, body) => Response::builder().status(code).body(full(body)).unwrap(),
        Reply::Slow(d, body) => {
            tokio::time::sleep(d).await;
            Response::new(full(body))
        }
        Reply::Truncated(body) => {
            let half = Bytes::from(body[..body.len() / 2].to_owned());
            let frames = stream::iter(vec![
                Ok(Frame::data(half)),
                Err(std::io::Error::other("connection broken on purpose")),
            ]);
            Response::new(StreamBody::new(frames).boxed())
        }
        Reply::HugeString(n) => huge(
            n,
            b'a',
            br#"{"new":[{"type":"ban","scope":"Ip","duration":"1h","value":""#,
        ),
        Reply::HugePadding(n) => huge(n, b' ', br#"{"new":["#),
        Reply::Trickle(every, body) => {
            let bytes = Bytes::from(body);
            let frames = stream::unfold(0usize, move |i| {
                let bytes = bytes.clone();
                async move {
                    if i >= bytes.len() {
                        return None;
                    }
                    tokio::time::sleep(every).await;
                    Some((
                        Ok::<_, std::io::Error>(Frame::data(bytes.slice(i..i + 1))),
                        i + 1,
                    ))
                }
            });
            Response::new(StreamBody::new(frames).boxed())
        }
    }
}

fn huge(n: u64, fill: u8, head: &'static [u8]) -> Response<Body> {
    let chunk = Bytes::from(vec![fill; 64 * 1024]);
    let count = n / chunk.len() as u64;
    let frames = stream::iter(
        std::iter::once(Bytes::from_static(head))
            .chain((0..count).map(move |_| chunk.clone()))
            .map(|b| Ok::<_, std::io::Error>(Frame::data(b))),
    );
    Response::new(StreamBody::new(frames).boxed())
}

/// A decision object as the LAPI writes it.
pub fn decision(value: &str, scope: &str, kind: &str, duration: &str) -> String {
    format!(
        r#"{{"id":1,"origin":"cscli","scenario":"test","scope":"{scope}","type":"{kind}","value":"{value}","duration":"{duration}"}}"#
    )
}
