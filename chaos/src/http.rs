//! Blocking JSON over HTTP (ureq), with a time limit on every call.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().into()
}

/// GET `url`: the HTTP status and the JSON body (`Value::Null` if it was not JSON).
pub fn get(agent: &ureq::Agent, url: &str) -> Result<(u16, Value)> {
    let mut response = agent.get(url).call().with_context(|| format!("GET {url}"))?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().with_context(|| format!("GET {url}: body"))?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// POST `body` as JSON to `url`: the HTTP status and the JSON body.
pub fn post(agent: &ureq::Agent, url: &str, body: &Value) -> Result<(u16, Value)> {
    let mut response = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body.to_string())
        .with_context(|| format!("POST {url}"))?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().with_context(|| format!("POST {url}: body"))?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// The JSON-RPC error code of an error answer (`{"error": {"code": …}}`), if any.
pub fn error_code(body: &Value) -> Option<i64> {
    body["error"]["code"].as_i64()
}
