//! nb-management's admin API as the end-to-end tests call it.

use std::time::Duration;

use serde_json::Value;

pub struct AdminApi {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminApi {
    /// `base` is management's URL without a path, e.g. `http://127.0.0.1:8090`.
    pub fn new(base: String, token: String) -> Self {
        Self {
            base,
            token,
            http: reqwest::Client::new(),
        }
    }

    /// One request; the status and the JSON body (`Null` when there is none).
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.call_as(&self.token, method, path, body).await
    }

    /// The same, with another credential (a proxy's token, a wrong one).
    pub async fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let res = req.send().await.expect("management answers");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The newest event matching `query`, waiting up to 10 s for it to be shipped.
    pub async fn first_event(&self, query: &str) -> Option<Value> {
        for _ in 0..40 {
            let (_, page) = self
                .call("GET", &format!("/api/v1/events?{query}"), None)
                .await;
            if let Some(e) = page["events"].as_array().and_then(|a| a.first()) {
                return Some(e.clone());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        None
    }
}
