//! A real moto server on a free loopback port, killed when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Starts moto's server in-process with a watchdog thread that exits as soon
/// as the parent (the test process) is gone, even after a SIGKILL, so no test
/// ever leaves a moto behind.
const LAUNCHER: &str = r#"
import os, sys, threading, time
parent = os.getppid()
def watchdog():
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(0.2)
threading.Thread(target=watchdog, daemon=True).start()
from moto.server import main
main(["-H", "127.0.0.1", "-p", sys.argv[1]])
"#;

/// A running moto server. Dropping it kills the process and waits for it.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    addr: SocketAddr,
}

impl Moto {
    /// Starts moto from the project's virtualenv and waits until it answers.
    ///
    /// The interpreter is `XROLE_MOTO_PYTHON`, else `<workspace>/.venv/bin/python`.
    pub fn start() -> anyhow::Result<Self> {
        let python = python()?;
        let mut last_error = None;
        // A free port can be taken between our probe and moto's bind: retry.
        for _ in 0..5 {
            let port = free_port()?;
            let child = Command::new(&python)
                .arg("-c")
                .arg(LAUNCHER)
                .arg(port.to_string())
                .env("MOTO_ALLOW_NONEXISTENT_REGION", "true")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot start moto with {}", python.display()))?;
            let mut moto = Moto {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            };
            match moto.wait_ready(Duration::from_secs(60)) {
                Ok(()) => return Ok(moto),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("moto did not start")))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address moto listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OS process id (for tests that check clean-up).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("moto exited during start-up: {status}");
            }
            if http_get_ok(self.addr, "/moto-api/") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("moto did not answer on {} within {timeout:?}", self.addr)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python interpreter of the project's virtualenv (moto, boto3, cfn-lint).
pub fn python() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("XROLE_MOTO_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let mut p = workspace_root().join(".venv/bin/python");
    // A build made from another copy of the tree bakes that copy's path in;
    // cargo and nextest also pass the running package's directory at run time.
    if !p.exists()
        && let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR")
    {
        p = PathBuf::from(dir).join("../../.venv/bin/python");
    }
    if !p.exists() {
        bail!(
            "{} is missing: run `scripts/test` (it creates the virtualenv from requirements-dev.txt) \
             or set XROLE_MOTO_PYTHON",
            p.display()
        );
    }
    Ok(p)
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn http_get_ok(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") && &buf[9..12] == b"200"
}
