//! `xrole serve` and `xrole worker` as child processes on one database and
//! one keyring, with their AWS side on moto through the testkit's gate; a
//! client for the API; and an inventory of what a job left in the
//! customer's account. Shared by the job, crash and replica tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use aws_credential_types::provider::ProvideCredentials;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use xrole_testkit::{Aws, TestDb, free_port};

pub const OPERATOR_TOKEN: &str = "operator-token-for-cluster-tests-0123456789";

/// One `xrole serve` or `xrole worker` child process.
pub struct Proc {
    pub child: tokio::process::Child,
    pub base: String,
    pub log: std::path::PathBuf,
}

impl Proc {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no shutdown, no drain; whatever the process was doing stops
    /// mid-way, as in a crash or an OOM kill.
    pub async fn kill(mut self) -> String {
        self.child.start_kill().unwrap();
        let status = self.child.wait().await.unwrap();
        {
            use std::os::unix::process::ExitStatusExt as _;
            assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status}");
        }
        self.log()
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub db_url: String,
    pub env: Vec<(String, String)>,
}

impl Cluster {
    pub async fn new(aws: &Aws, db: &TestDb) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let keyring = dir.path().join("xrole.keyring");
        xrole_crypto::Keyring::generate()
            .unwrap()
            .write_file(&keyring)
            .unwrap();
        let creds = aws
            .saas_config()
            .credentials_provider()
            .unwrap()
            .provide_credentials()
            .await
            .unwrap();
        let env = vec![
            ("XROLE_DATABASE_URL", db.url().to_owned()),
            ("XROLE_KEYRING_FILE", keyring.display().to_string()),
            ("XROLE_OPERATOR_TOKEN", OPERATOR_TOKEN.to_owned()),
            ("XROLE_RATE_LIMIT_PER_SECOND", "0".to_owned()),
            ("XROLE_ORG_RATE_LIMIT_PER_SECOND", "0".to_owned()),
            ("XROLE_ASSUME_PROPAGATION_SECONDS", "3".to_owned()),
            ("XROLE_JOB_LEASE_SECONDS", "4".to_owned()),
            ("XROLE_JOB_POLL_MILLISECONDS", "100".to_owned()),
            ("XROLE_EXECUTOR_POLL_MILLISECONDS", "200".to_owned()),
            ("AWS_ENDPOINT_URL", aws.endpoint()),
            ("AWS_ACCESS_KEY_ID", creds.access_key_id().to_owned()),
            (
                "AWS_SECRET_ACCESS_KEY",
                creds.secret_access_key().to_owned(),
            ),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("NO_COLOR", "1".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Cluster {
            dir,
            db_url: db.url().to_owned(),
            env,
        }
    }

    pub fn spawn(&self, name: &str, args: &[&str], port: Option<u16>, workers: usize) -> Proc {
        self.spawn_with(name, args, port, workers, &[])
    }

    /// Like [`Cluster::spawn`], with `extra` environment variables on top
    /// of the cluster's.
    pub fn spawn_with(
        &self,
        name: &str,
        args: &[&str],
        port: Option<u16>,
        workers: usize,
        extra: &[(&str, &str)],
    ) -> Proc {
        let log = self.dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_xrole"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("XROLE_WORKERS", workers.to_string())
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true);
        let base = match port {
            Some(p) => {
                cmd.env("XROLE_LISTEN", format!("127.0.0.1:{p}"));
                cmd.env("XROLE_PUBLIC_URL", format!("http://127.0.0.1:{p}"));
                format!("http://127.0.0.1:{p}")
            }
            None => String::new(),
        };
        Proc {
            child: cmd.spawn().unwrap(),
            base,
            log,
        }
    }

    /// `xrole serve` on a free port, once it answers /readyz.
    pub async fn serve(&self, name: &str, workers: usize) -> Proc {
        self.serve_with(name, workers, &[]).await
    }

    /// [`Cluster::serve`] with extra environment variables.
    pub async fn serve_with(&self, name: &str, workers: usize, extra: &[(&str, &str)]) -> Proc {
        // A probed free port can be taken before the child binds it (tests run
        // in parallel): only a child that logged its own bind is ours, and one
        // that could not listen is started again on another port.
        for _ in 0..5 {
            let port = free_port().unwrap();
            let mut p = self.spawn_with(name, &["serve"], Some(port), workers, extra);
            loop {
                if p.log().contains("xrole listening") {
                    break;
                }
                if let Some(status) = p.child.try_wait().unwrap() {
                    let log = p.log();
                    assert!(
                        log.contains("cannot listen"),
                        "{name} exited ({status}) before listening: {log}"
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if p.child.try_wait().unwrap().is_some() {
                continue;
            }
            let client = reqwest::Client::new();
            for _ in 0..600 {
                if let Ok(r) = client.get(format!("{}/readyz", p.base)).send().await
                    && r.status().is_success()
                {
                    return p;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("{name} did not start: {}", p.log());
        }
        panic!("{name} found no free port in 5 tries");
    }
}

pub struct Client {
    pub http: reqwest::Client,
    pub key: String,
}

impl Client {
    pub async fn call(
        &self,
        method: Method,
        url: String,
        idem: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let (status, text) = self.call_text(method, url, idem, body).await;
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The status and the body exactly as sent.
    pub async fn call_text(
        &self,
        method: Method,
        url: String,
        idem: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, String) {
        let mut r = self.http.request(method, url).bearer_auth(&self.key);
        if let Some(k) = idem {
            r = r.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        let res = tokio::time::timeout(Duration::from_secs(120), r.send())
            .await
            .expect("a request hung")
            .unwrap();
        let status = res.status().as_u16();
        (status, res.text().await.unwrap())
    }

    pub async fn get(&self, url: String) -> Value {
        let (status, v) = self.call(Method::GET, url.clone(), None, None).await;
        assert_eq!(status, 200, "{url}: {v}");
        v
    }

    pub async fn wait<F: Fn(&Value) -> bool>(&self, url: String, done: F) -> Value {
        for _ in 0..1200 {
            let (status, v) = self.call(Method::GET, url.clone(), None, None).await;
            assert_eq!(status, 200, "{v}");
            if done(&v) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{url} never reached the expected state");
    }

    /// The job once it succeeded or failed.
    pub async fn finished(&self, base: &str, job_id: &str) -> Value {
        self.wait(format!("{base}/v1/jobs/{job_id}"), |v| {
            v["state"] == "succeeded" || v["state"] == "failed"
        })
        .await
    }
}

/// Creates an org on `p`, an active provisioning link, and returns both.
pub async fn org_and_active_link(
    aws: &Aws,
    customer: &xrole_testkit::CustomerAccount,
    p: &Proc,
) -> (Client, String) {
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{}/v1/organizations", p.base))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"name": "Acme", "admin_email": "admin@acme.example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let v: Value = res.json().await.unwrap();
    let client = Client {
        http,
        key: v["api_key"]["token"].as_str().unwrap().to_owned(),
    };
    let (status, link) = client
        .call(
            Method::POST,
            format!("{}/v1/aws-accounts", p.base),
            Some("link-1"),
            Some(
                &json!({"name": "prod", "access_level": "provisioning", "region": "us-east-1",
                         "aws_account_id": customer.account_id()}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{link}");
    let link_id = link["id"].as_str().unwrap().to_owned();
    let role = customer
        .create_xrole_role(
            "xrole",
            &aws.saas_principal_arn(),
            link["external_id"].as_str().unwrap(),
        )
        .await
        .unwrap();
    let (status, _) = client
        .call(
            Method::PUT,
            format!("{}/v1/aws-accounts/{link_id}/role", p.base),
            None,
            Some(&json!({"role_arn": role})),
        )
        .await;
    assert_eq!(status, 202);
    let link = client
        .wait(format!("{}/v1/aws-accounts/{link_id}", p.base), |v| {
            v["state"] != "pending" && v["state"] != "verifying"
        })
        .await;
    assert_eq!(link["state"], "active", "{link}");
    (client, link_id)
}

/// What carries the `xrole:job` tag `job` in an account, by kind (`vpc`,
/// `subnet`, `igw`, `rtb`, `sg`, `instance` (not terminated), `db`,
/// `db_subnet_group`), seen with `config` (admin credentials straight to
/// moto: neither counted nor delayed by the gate).
pub async fn tagged_by_job(
    config: &aws_config::SdkConfig,
    job: &str,
) -> BTreeMap<&'static str, Vec<String>> {
    use aws_sdk_ec2::types::{Filter, InstanceStateName};
    let ec2 = aws_sdk_ec2::Client::new(config);
    let rds = aws_sdk_rds::Client::new(config);
    let by_job = || Filter::builder().name("tag:xrole:job").values(job).build();
    let mut out: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let vpcs = ec2.describe_vpcs().filters(by_job()).send().await.unwrap();
    out.insert(
        "vpc",
        vpcs.vpcs()
            .iter()
            .filter_map(|v| v.vpc_id().map(str::to_owned))
            .collect(),
    );
    let subnets = ec2
        .describe_subnets()
        .filters(by_job())
        .send()
        .await
        .unwrap();
    out.insert(
        "subnet",
        subnets
            .subnets()
            .iter()
            .filter_map(|v| v.subnet_id().map(str::to_owned))
            .collect(),
    );
    let igws = ec2
        .describe_internet_gateways()
        .filters(by_job())
        .send()
        .await
        .unwrap();
    out.insert(
        "igw",
        igws.internet_gateways()
            .iter()
            .filter_map(|v| v.internet_gateway_id().map(str::to_owned))
            .collect(),
    );
    let rtbs = ec2
        .describe_route_tables()
        .filters(by_job())
        .send()
        .await
        .unwrap();
    out.insert(
        "rtb",
        rtbs.route_tables()
            .iter()
            .filter_map(|v| v.route_table_id().map(str::to_owned))
            .collect(),
    );
    let sgs = ec2
        .describe_security_groups()
        .filters(by_job())
        .send()
        .await
        .unwrap();
    out.insert(
        "sg",
        sgs.security_groups()
            .iter()
            .filter_map(|v| v.group_id().map(str::to_owned))
            .collect(),
    );
    let instances = ec2
        .describe_instances()
        .filters(by_job())
        .send()
        .await
        .unwrap();
    out.insert(
        "instance",
        instances
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter(|i| i.state().and_then(|s| s.name()) != Some(&InstanceStateName::Terminated))
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect(),
    );
    let tagged = |tags: &[aws_sdk_rds::types::Tag]| {
        tags.iter()
            .any(|t| t.key() == Some("xrole:job") && t.value() == Some(job))
    };
    let dbs = rds.describe_db_instances().send().await.unwrap();
    out.insert(
        "db",
        dbs.db_instances()
            .iter()
            .filter(|d| tagged(d.tag_list()))
            .filter_map(|d| d.db_instance_identifier().map(str::to_owned))
            .collect(),
    );
    let groups = rds.describe_db_subnet_groups().send().await.unwrap();
    let mut names = Vec::new();
    for g in groups.db_subnet_groups() {
        let (Some(arn), Some(name)) = (g.db_subnet_group_arn(), g.db_subnet_group_name()) else {
            continue;
        };
        let tags = rds
            .list_tags_for_resource()
            .resource_name(arn)
            .send()
            .await
            .unwrap();
        if tagged(tags.tag_list()) {
            names.push(name.to_owned());
        }
    }
    out.insert("db_subnet_group", names);
    out
}
