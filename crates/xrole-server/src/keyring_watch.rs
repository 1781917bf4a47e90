//! A running server follows its keyring file: it reloads the file when it
//! changes (checked every few seconds, and at once on `SIGHUP`), and it
//! reports the key it seals with to the database
//! (`xrole_store::keyring_instances`), so that `xrole keys retire` never
//! removes a key that a live server still seals new values with.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use xrole_crypto::Keyring;

use crate::state::AppState;

/// How often a server reports its primary key.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);
/// A server that has not reported for this long is not counted as live.
pub const LIVE_WITHIN: Duration = Duration::from_secs(30);

/// The keyring a server seals and opens with, replaceable while it runs.
#[derive(Debug)]
pub struct KeyringCell {
    current: RwLock<Arc<Keyring>>,
}

impl KeyringCell {
    /// Holds `k`.
    pub fn new(k: Arc<Keyring>) -> Self {
        KeyringCell {
            current: RwLock::new(k),
        }
    }

    /// The keyring as it is now (a value sealed with it stays openable by
    /// every later keyring until its key is retired).
    pub fn get(&self) -> Arc<Keyring> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Switches to `next`, if it keeps the same pepper (API-key hashes and
    /// blind indexes depend on it) and every key of the current keyring that
    /// the next one still needs is there. Returns whether it switched.
    pub fn replace(&self, next: Arc<Keyring>) -> Result<bool, String> {
        let mut cur = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let probe = b"xrole keyring pepper probe";
        if cur.blind_index("keyring-reload", probe) != next.blind_index("keyring-reload", probe) {
            return Err(
                "the new keyring has another pepper: every API key would stop working; \
                        keep the pepper when rotating"
                    .into(),
            );
        }
        if cur.key_ids() == next.key_ids() && cur.primary_key_id() == next.primary_key_id() {
            return Ok(false);
        }
        *cur = next;
        Ok(true)
    }
}

fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The instance name a server reports under: host, process and a random part.
pub fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    let tag = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &tag[..8])
}

async fn report(state: &AppState, instance: &str) {
    let primary = state.keyring().primary_key_id();
    let now = state.now_ms();
    let name = instance.to_owned();
    let r = state
        .db(move |conn| {
            Ok(xrole_store::keyring_instances::report(
                conn, &name, primary, now,
            )?)
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "cannot report the keyring's primary key");
    }
}

/// Forgets this server's report (it is stopping).
pub async fn forget(state: &AppState, instance: &str) {
    let name = instance.to_owned();
    let _ = state
        .db(move |conn| Ok(xrole_store::keyring_instances::forget(conn, &name)?))
        .await;
}

/// Reports the primary key now and every [`REPORT_EVERY`]; with a keyring
/// `file`, reloads it when it changes (checked every `check_every`) or on
/// `SIGHUP`, and reports again at once.
pub fn spawn(
    state: AppState,
    instance: String,
    file: Option<PathBuf>,
    check_every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut last = file.as_ref().and_then(stamp);
        let mut since_report = Duration::MAX;
        let tick = check_every.min(REPORT_EVERY);
        loop {
            if since_report >= REPORT_EVERY {
                report(&state, &instance).await;
                since_report = Duration::ZERO;
            }
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let forced = tokio::select! {
                () = tokio::time::sleep(tick) => false,
                () = hangup => true,
            };
            since_report += tick;
            let Some(path) = &file else { continue };
            let now = stamp(path);
            if !forced && now == last {
                continue;
            }
            last = now;
            match Keyring::from_file(path) {
                Ok(k) => match state.keyring_cell().replace(Arc::new(k)) {
                    Ok(true) => {
                        let k = state.keyring();
                        tracing::info!(
                            primary = k.primary_key_id(),
                            keys = ?k.key_ids(),
                            path = %path.display(),
                            "keyring reloaded"
                        );
                        report(&state, &instance).await;
                        since_report = Duration::ZERO;
                    }
                    Ok(false) => {}
                    Err(why) => {
                        tracing::error!(path = %path.display(), %why, "keyring not reloaded");
                    }
                },
                // A file being rewritten may be read half-written: the next
                // check reads it again.
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "keyring file unreadable; keeping the current keyring");
                    last = None;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_keeps_the_pepper_and_switches_the_primary() {
        let first = Keyring::generate().unwrap();
        let text = first.to_text();
        let cell = KeyringCell::new(Arc::new(first));
        let mut next = Keyring::parse(text.expose_secret()).unwrap();
        assert_eq!(
            cell.replace(Arc::new(Keyring::parse(text.expose_secret()).unwrap())),
            Ok(false)
        );
        let id = next.add_key().unwrap();
        next.promote(id).unwrap();
        assert_eq!(cell.replace(Arc::new(next)), Ok(true));
        assert_eq!(cell.get().primary_key_id(), id);
        // Another keyring altogether (another pepper) is refused.
        assert!(
            cell.replace(Arc::new(Keyring::generate().unwrap()))
                .is_err()
        );
        assert_eq!(cell.get().primary_key_id(), id);
    }
}
