//! Configuration: an optional TOML file, overridden by `XROLE_*` environment
//! variables. The crate README documents every setting in one table.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use xrole_crypto::SecretString;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "./xrole.db";
/// Where `--dev` keeps its generated keyring unless a keyring file is configured.
pub const DEV_KEYRING_FILE: &str = "./xrole-dev.keyring";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file cannot be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for this schema.
    #[error("invalid configuration file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting has an invalid value.
    #[error("invalid value for {name}: {message}")]
    Invalid {
        /// The setting (environment variable or file key).
        name: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Where the keyring comes from.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyringSource {
    /// The keyring text itself (`XROLE_KEYRING`).
    Inline(SecretString),
    /// A file holding the keyring text, mode 0600 (`XROLE_KEYRING_FILE`).
    File(PathBuf),
}

/// Token-bucket rate limit per API key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second; `0` disables rate limiting.
    pub per_second: f64,
    /// Bucket size: how many requests may come at once.
    pub burst: u32,
}

/// The server's configuration.
#[derive(Debug)]
#[non_exhaustive]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// `sqlite://path`, a bare SQLite path, or `postgres://…`.
    pub database_url: String,
    /// The externally reachable base URL, used in callback and template links.
    pub public_url: Option<url::Url>,
    /// Bearer token allowed to create organizations.
    pub operator_token: Option<SecretString>,
    /// Bearer token `GET /metrics` requires; open without one.
    pub metrics_token: Option<SecretString>,
    /// Where the keyring comes from; `None` refuses to start unless `--dev`.
    pub keyring: Option<KeyringSource>,
    /// Whether anyone may create an organization without the operator token.
    pub signup_open: bool,
    /// Rate limit per API key.
    pub rate_limit: RateLimit,
    /// Rate limit per organization, shared by all its keys and sessions.
    pub org_rate_limit: RateLimit,
    /// Jobs one process runs at once (async tasks: they mostly wait on AWS).
    pub workers: usize,
    /// Jobs of one organization running at once across all processes; its
    /// other jobs wait while other organizations' run.
    pub jobs_per_org: u32,
    /// Password verifications (argon2id, 19 MiB each) running at once;
    /// further logins answer 429 at once.
    pub login_concurrency: usize,
    /// How often a running server checks its keyring file for changes
    /// (it reloads it at once on `SIGHUP`), in seconds.
    pub keyring_reload_secs: u64,
    /// Largest accepted request body in bytes; bigger bodies get 413.
    pub max_body_bytes: usize,
    /// Seconds a request body may take to arrive once its head is read;
    /// a slower body gets 408.
    pub body_timeout_secs: u64,
    /// Lifetime of keys issued by `POST /v1/sessions`, in seconds.
    pub session_ttl_secs: i64,
    /// How long a verified API key is trusted without reading its row again,
    /// in milliseconds (0: read it on every request). A revocation, a user
    /// change or any other write on this replica clears the cache at once;
    /// other replicas see it within this time.
    pub auth_cache_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            public_url: None,
            operator_token: None,
            metrics_token: None,
            keyring: None,
            signup_open: false,
            rate_limit: RateLimit {
                per_second: 20.0,
                burst: 40,
            },
            org_rate_limit: RateLimit {
                per_second: 50.0,
                burst: 100,
            },
            workers: 128,
            jobs_per_org: 4,
            login_concurrency: 4,
            keyring_reload_secs: 2,
            max_body_bytes: 64 * 1024,
            body_timeout_secs: 10,
            session_ttl_secs: 3600,
            auth_cache_ms: 1000,
        }
    }
}

/// The file schema: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database_url: Option<String>,
    public_url: Option<String>,
    operator_token: Option<String>,
    metrics_token: Option<String>,
    keyring: Option<String>,
    keyring_file: Option<PathBuf>,
    signup_open: Option<bool>,
    rate_limit_per_second: Option<f64>,
    rate_limit_burst: Option<u32>,
    org_rate_limit_per_second: Option<f64>,
    org_rate_limit_burst: Option<u32>,
    workers: Option<usize>,
    jobs_per_org: Option<u32>,
    login_concurrency: Option<usize>,
    keyring_reload_secs: Option<u64>,
    max_body_bytes: Option<usize>,
    body_timeout_secs: Option<u64>,
    session_ttl_secs: Option<i64>,
    auth_cache_ms: Option<u64>,
}

impl Config {
    /// Loads `file` (if any), then applies the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with(file, |name| std::env::var(name).ok())
    }

    /// Like [`Config::load`] with an explicit environment lookup (for tests).
    pub fn load_with(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let fc = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::File {
                    path: path.to_owned(),
                    message: e.message().to_owned(),
                })?
            }
            None => FileConfig::default(),
        };
        let mut c = Config::default();
        let pick = |var: &str, file: Option<String>| env(var).or(file);

        if let Some(v) = pick("XROLE_LISTEN", fc.listen) {
            c.listen = v.parse().map_err(|e| invalid("XROLE_LISTEN", e))?;
        }
        if let Some(v) = pick("XROLE_DATABASE_URL", fc.database_url) {
            c.database_url = v;
        }
        if let Some(v) = pick("XROLE_PUBLIC_URL", fc.public_url) {
            let u = url::Url::parse(&v).map_err(|e| invalid("XROLE_PUBLIC_URL", e))?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(invalid("XROLE_PUBLIC_URL", "must be an http or https URL"));
            }
            c.public_url = Some(u);
        }
        if let Some(v) = pick("XROLE_OPERATOR_TOKEN", fc.operator_token) {
            if v.len() < 16 {
                return Err(invalid(
                    "XROLE_OPERATOR_TOKEN",
                    "must be at least 16 characters",
                ));
            }
            c.operator_token = Some(SecretString::new(v));
        }
        if let Some(v) = pick("XROLE_METRICS_TOKEN", fc.metrics_token) {
            if v.len() < 16 {
                return Err(invalid(
                    "XROLE_METRICS_TOKEN",
                    "must be at least 16 characters",
                ));
            }
            c.metrics_token = Some(SecretString::new(v));
        }
        let inline = pick("XROLE_KEYRING", fc.keyring);
        let file = env("XROLE_KEYRING_FILE")
            .map(PathBuf::from)
            .or(fc.keyring_file);
        c.keyring = match (inline, file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "XROLE_KEYRING",
                    "set either XROLE_KEYRING or XROLE_KEYRING_FILE, not both",
                ));
            }
            (Some(text), None) => Some(KeyringSource::Inline(SecretString::new(text))),
            (None, Some(path)) => Some(KeyringSource::File(path)),
            (None, None) => None,
        };
        if let Some(v) = env("XROLE_SIGNUP_OPEN") {
            c.signup_open = parse_bool("XROLE_SIGNUP_OPEN", &v)?;
        } else if let Some(v) = fc.signup_open {
            c.signup_open = v;
        }
        if let Some(v) = env("XROLE_RATE_LIMIT_PER_SECOND") {
            c.rate_limit.per_second = v
                .parse()
                .map_err(|e| invalid("XROLE_RATE_LIMIT_PER_SECOND", e))?;
        } else if let Some(v) = fc.rate_limit_per_second {
            c.rate_limit.per_second = v;
        }
        if !(c.rate_limit.per_second.is_finite() && c.rate_limit.per_second >= 0.0) {
            return Err(invalid(
                "XROLE_RATE_LIMIT_PER_SECOND",
                "must be a number >= 0",
            ));
        }
        if let Some(v) = env("XROLE_RATE_LIMIT_BURST") {
            c.rate_limit.burst = v
                .parse()
                .map_err(|e| invalid("XROLE_RATE_LIMIT_BURST", e))?;
        } else if let Some(v) = fc.rate_limit_burst {
            c.rate_limit.burst = v;
        }
        if c.rate_limit.burst == 0 {
            return Err(invalid("XROLE_RATE_LIMIT_BURST", "must be at least 1"));
        }
        if let Some(v) = env("XROLE_ORG_RATE_LIMIT_PER_SECOND") {
            c.org_rate_limit.per_second = v
                .parse()
                .map_err(|e| invalid("XROLE_ORG_RATE_LIMIT_PER_SECOND", e))?;
        } else if let Some(v) = fc.org_rate_limit_per_second {
            c.org_rate_limit.per_second = v;
        }
        if !(c.org_rate_limit.per_second.is_finite() && c.org_rate_limit.per_second >= 0.0) {
            return Err(invalid(
                "XROLE_ORG_RATE_LIMIT_PER_SECOND",
                "must be a number >= 0",
            ));
        }
        if let Some(v) = env("XROLE_ORG_RATE_LIMIT_BURST") {
            c.org_rate_limit.burst = v
                .parse()
                .map_err(|e| invalid("XROLE_ORG_RATE_LIMIT_BURST", e))?;
        } else if let Some(v) = fc.org_rate_limit_burst {
            c.org_rate_limit.burst = v;
        }
        if c.org_rate_limit.burst == 0 {
            return Err(invalid("XROLE_ORG_RATE_LIMIT_BURST", "must be at least 1"));
        }
        if let Some(v) = env("XROLE_WORKERS") {
            c.workers = v.parse().map_err(|e| invalid("XROLE_WORKERS", e))?;
        } else if let Some(v) = fc.workers {
            c.workers = v;
        }
        if c.workers > 1024 {
            return Err(invalid("XROLE_WORKERS", "must be at most 1024"));
        }
        if let Some(v) = env("XROLE_JOBS_PER_ORG") {
            c.jobs_per_org = v.parse().map_err(|e| invalid("XROLE_JOBS_PER_ORG", e))?;
        } else if let Some(v) = fc.jobs_per_org {
            c.jobs_per_org = v;
        }
        if c.jobs_per_org == 0 {
            return Err(invalid("XROLE_JOBS_PER_ORG", "must be at least 1"));
        }
        if let Some(v) = env("XROLE_LOGIN_CONCURRENCY") {
            c.login_concurrency = v
                .parse()
                .map_err(|e| invalid("XROLE_LOGIN_CONCURRENCY", e))?;
        } else if let Some(v) = fc.login_concurrency {
            c.login_concurrency = v;
        }
        if !(1..=256).contains(&c.login_concurrency) {
            return Err(invalid("XROLE_LOGIN_CONCURRENCY", "must be 1 to 256"));
        }
        if let Some(v) = env("XROLE_KEYRING_RELOAD_SECONDS") {
            c.keyring_reload_secs = v
                .parse()
                .map_err(|e| invalid("XROLE_KEYRING_RELOAD_SECONDS", e))?;
        } else if let Some(v) = fc.keyring_reload_secs {
            c.keyring_reload_secs = v;
        }
        if !(1..=3600).contains(&c.keyring_reload_secs) {
            return Err(invalid("XROLE_KEYRING_RELOAD_SECONDS", "must be 1 to 3600"));
        }
        if let Some(v) = env("XROLE_MAX_BODY_BYTES") {
            c.max_body_bytes = v.parse().map_err(|e| invalid("XROLE_MAX_BODY_BYTES", e))?;
        } else if let Some(v) = fc.max_body_bytes {
            c.max_body_bytes = v;
        }
        if c.max_body_bytes < 1024 {
            return Err(invalid("XROLE_MAX_BODY_BYTES", "must be at least 1024"));
        }
        if let Some(v) = env("XROLE_BODY_TIMEOUT_SECONDS") {
            c.body_timeout_secs = v
                .parse()
                .map_err(|e| invalid("XROLE_BODY_TIMEOUT_SECONDS", e))?;
        } else if let Some(v) = fc.body_timeout_secs {
            c.body_timeout_secs = v;
        }
        if c.body_timeout_secs == 0 {
            return Err(invalid("XROLE_BODY_TIMEOUT_SECONDS", "must be at least 1"));
        }
        if let Some(v) = env("XROLE_SESSION_TTL_SECONDS") {
            c.session_ttl_secs = v
                .parse()
                .map_err(|e| invalid("XROLE_SESSION_TTL_SECONDS", e))?;
        } else if let Some(v) = fc.session_ttl_secs {
            c.session_ttl_secs = v;
        }
        if !(60..=86_400).contains(&c.session_ttl_secs) {
            return Err(invalid(
                "XROLE_SESSION_TTL_SECONDS",
                "must be between 60 and 86400",
            ));
        }
        if let Some(v) = env("XROLE_AUTH_CACHE_MS") {
            c.auth_cache_ms = v.parse().map_err(|e| invalid("XROLE_AUTH_CACHE_MS", e))?;
        } else if let Some(v) = fc.auth_cache_ms {
            c.auth_cache_ms = v;
        }
        if c.auth_cache_ms > 60_000 {
            return Err(invalid(
                "XROLE_AUTH_CACHE_MS",
                "must be at most 60000 (a revocation must not wait longer)",
            ));
        }
        Ok(c)
    }
}

/// How the server writes its log lines (`XROLE_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LogFormat {
    /// One human-readable line per event (the default), coloured only on a
    /// terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl LogFormat {
    /// Parses `XROLE_LOG_FORMAT`: `text` (or unset) or `json`.
    pub fn parse(value: Option<&str>) -> Result<LogFormat, ConfigError> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("" | "text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(_) => Err(invalid("XROLE_LOG_FORMAT", "expected text or json")),
        }
    }
}

fn invalid(name: &'static str, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        name,
        message: e.to_string(),
    }
}

fn parse_bool(name: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(invalid(name, "expected true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_are_sqlite_and_loopback() {
        let c = Config::load_with(None, env(&[])).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert!(c.keyring.is_none());
        assert!(!c.signup_open);
    }

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xrole.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\nsignup_open = true\nrate_limit_burst = 5\n",
        )
        .unwrap();
        let c = Config::load_with(Some(&path), env(&[("XROLE_LISTEN", "127.0.0.1:1234")])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:1234");
        assert!(c.signup_open);
        assert_eq!(c.rate_limit.burst, 5);
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xrole.toml");
        std::fs::write(&path, "listn = \"x\"\n").unwrap();
        assert!(matches!(
            Config::load_with(Some(&path), env(&[])),
            Err(ConfigError::File { .. })
        ));
        for (k, v) in [
            ("XROLE_LISTEN", "nope"),
            ("XROLE_PUBLIC_URL", "ftp://x"),
            ("XROLE_SIGNUP_OPEN", "maybe"),
            ("XROLE_RATE_LIMIT_BURST", "0"),
            ("XROLE_OPERATOR_TOKEN", "short"),
            ("XROLE_METRICS_TOKEN", "short"),
            ("XROLE_KEYRING_RELOAD_SECONDS", "0"),
            ("XROLE_AUTH_CACHE_MS", "60001"),
            ("XROLE_AUTH_CACHE_MS", "-1"),
        ] {
            assert!(
                matches!(
                    Config::load_with(None, env(&[(k, v)])),
                    Err(ConfigError::Invalid { .. })
                ),
                "{k}={v} accepted"
            );
        }
    }

    #[test]
    fn log_format_is_text_unless_json_is_asked() {
        assert_eq!(LogFormat::parse(None).unwrap(), LogFormat::Text);
        assert_eq!(LogFormat::parse(Some("text")).unwrap(), LogFormat::Text);
        assert_eq!(LogFormat::parse(Some(" JSON ")).unwrap(), LogFormat::Json);
        assert!(LogFormat::parse(Some("yaml")).is_err());
    }

    #[test]
    fn keyring_sources_are_exclusive_and_redacted() {
        let c = Config::load_with(None, env(&[("XROLE_KEYRING", "secret-keyring-text")])).unwrap();
        assert!(matches!(c.keyring, Some(KeyringSource::Inline(_))));
        assert!(!format!("{c:?}").contains("secret-keyring-text"));
        let both = env(&[("XROLE_KEYRING", "a"), ("XROLE_KEYRING_FILE", "/k")]);
        assert!(Config::load_with(None, both).is_err());
    }
}

/// How the keyring was obtained, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyringOrigin {
    /// From `XROLE_KEYRING`.
    Inline,
    /// From a file.
    File(PathBuf),
    /// `--dev`: loaded from the development keyring file.
    DevExisting(PathBuf),
    /// `--dev`: freshly generated into the development keyring file.
    DevCreated(PathBuf),
}

/// Loads the configured keyring; with `dev` and none configured, loads or
/// creates [`DEV_KEYRING_FILE`] (mode 0600). Without either it fails: the
/// server never runs with a keyring nobody can recover.
pub fn load_keyring(
    source: Option<&KeyringSource>,
    dev: bool,
) -> Result<(xrole_crypto::Keyring, KeyringOrigin), crate::StartError> {
    use xrole_crypto::Keyring;
    match source {
        Some(KeyringSource::Inline(text)) => {
            Ok((Keyring::parse(text.expose_secret())?, KeyringOrigin::Inline))
        }
        Some(KeyringSource::File(path)) => {
            Ok((Keyring::from_file(path)?, KeyringOrigin::File(path.clone())))
        }
        None if dev => {
            let path = PathBuf::from(DEV_KEYRING_FILE);
            if path.exists() {
                Ok((Keyring::from_file(&path)?, KeyringOrigin::DevExisting(path)))
            } else {
                let k = Keyring::generate()?;
                k.write_file(&path)?;
                Ok((k, KeyringOrigin::DevCreated(path)))
            }
        }
        None => Err(crate::StartError::NoKeyring),
    }
}
