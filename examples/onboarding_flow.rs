//! A client of a running `xrole serve`: link a customer's AWS account, hand
//! the customer the one-click link, wait until xrole has verified the role,
//! then provision a VPC in their account.
//!
//! ```sh
//! XROLE_URL=http://127.0.0.1:8080 XROLE_API_KEY=xrk_... \
//! XROLE_CUSTOMER_ACCOUNT=111122223333 \
//! cargo run -p xrole-examples --example onboarding_flow
//! ```
//!
//! It prints the quick-create URL (send it to your customer) and one JSON line
//! with the link id and the `onboarding` object (template URL, stack name and
//! parameters, for the AWS CLI or Terraform), then polls until the link is
//! `active` — the customer's stack calls back and xrole verifies the role —
//! and finally creates a VPC and waits for its job.
//! Plain HTTP only, as against a local server: enable one of reqwest's TLS
//! features for an `https://` XROLE_URL.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// A minimal xrole API client.
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

// The API key stays out of Debug output.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("key", &"** redacted **")
            .finish()
    }
}

impl Client {
    /// `base` like `http://127.0.0.1:8080`, `key` an `xrk_…` API key.
    pub fn new(base: &str, key: &str) -> Self {
        Client {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let res = req.bearer_auth(&self.key).send().await?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            // Errors are RFC 9457 problems with a stable `code`.
            bail!(
                "xrole answered {status}: {} ({})",
                body["detail"],
                body["code"]
            );
        }
        Ok(body)
    }

    /// GET a JSON document.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// POST with a fresh Idempotency-Key: safe to retry with the same key.
    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        idempotency_key: &str,
    ) -> anyhow::Result<Value> {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("idempotency-key", idempotency_key)
            .json(body);
        self.send(req).await
    }

    /// Polls `path` until `done` holds, at most `timeout`.
    pub async fn poll(
        &self,
        path: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let v = self.get(path).await?;
            if done(&v) {
                return Ok(v);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("timed out waiting on {path}: {v}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Create the link and print what the customer needs; returns the link.
pub async fn create_link(client: &Client, account: &str) -> anyhow::Result<Value> {
    let link = client
        .post(
            "/v1/aws-accounts",
            &json!({"name": "production", "aws_account_id": account, "access_level": "provisioning"}),
            &uuid::Uuid::new_v4().to_string(),
        )
        .await?;
    let url = link["onboarding"]["quick_create_url"]
        .as_str()
        .unwrap_or_default();
    println!("Send this link to your customer:\n{url}");
    println!(
        "{}",
        json!({"link_id": link["id"], "external_id": link["external_id"],
               "onboarding": link["onboarding"]})
    );
    Ok(link)
}

/// Wait for verification, then build a VPC; returns the finished job.
pub async fn provision_when_active(client: &Client, link_id: &str) -> anyhow::Result<Value> {
    let path = format!("/v1/aws-accounts/{link_id}");
    let link = client
        .poll(&path, Duration::from_secs(3600), |l| {
            !matches!(l["state"].as_str(), Some("pending" | "verifying"))
        })
        .await?;
    if link["state"] != "active" {
        bail!("the link is {}: {}", link["state"], link["last_error"]);
    }
    println!(
        "linked: {} in account {}",
        link["role_arn"], link["aws_account_id"]
    );
    let job = client
        .post(
            &format!("{path}/vpcs"),
            &json!({"name": "app", "cidr_block": "10.20.0.0/16",
                    "availability_zones": ["us-east-1a", "us-east-1b"]}),
            &uuid::Uuid::new_v4().to_string(),
        )
        .await?;
    let job_path = format!("/v1/jobs/{}", job["id"].as_str().context("job id")?);
    let job = client
        .poll(&job_path, Duration::from_secs(900), |j| {
            matches!(
                j["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        })
        .await?;
    if job["state"] != "succeeded" {
        bail!("provisioning {}: {}", job["state"], job["error"]);
    }
    println!("VPC ready: {}", job["resources"][0]["aws_id"]);
    Ok(job)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base = std::env::var("XROLE_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".to_owned());
    let key = std::env::var("XROLE_API_KEY").context("set XROLE_API_KEY to an xrk_… key")?;
    let account = std::env::var("XROLE_CUSTOMER_ACCOUNT")
        .context("set XROLE_CUSTOMER_ACCOUNT (12 digits)")?;
    let client = Client::new(&base, &key);
    let link = create_link(&client, &account).await?;
    provision_when_active(&client, link["id"].as_str().context("link id")?).await?;
    Ok(())
}
