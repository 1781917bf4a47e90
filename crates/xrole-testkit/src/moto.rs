//! A real moto server on a free loopback port, killed when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Starts moto's server in-process on a port the kernel picks, prints that
/// port on stdout once the socket listens, and runs a watchdog thread that exits
/// as soon as the parent (the test process) is gone, even after a SIGKILL, so
/// no test ever leaves a moto behind. Binding port 0 in the server itself (not
/// probing a free port first) means two tests starting at once can never end up
/// talking to the same server, or to another test's gate.
const LAUNCHER: &str = r#"
import os, sys, threading, time
parent = os.getppid()
def watchdog():
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(0.2)
threading.Thread(target=watchdog, daemon=True).start()
from werkzeug.serving import make_server
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication, MotoRequestHandler, create_backend_app)
app = DomainDispatcherApplication(create_backend_app)
server = make_server("127.0.0.1", 0, app, threaded=True,
                     request_handler=MotoRequestHandler)
os.environ["MOTO_PORT"] = str(server.port)
print(server.port, flush=True)
server.serve_forever()
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
        let mut child = Command::new(&python)
            .arg("-c")
            .arg(LAUNCHER)
            .env("MOTO_ALLOW_NONEXISTENT_REGION", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start moto with {}", python.display()))?;
        let port = match read_port(&mut child, Duration::from_secs(60)) {
            Ok(port) => port,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let mut moto = Moto {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        moto.wait_ready(Duration::from_secs(60))?;
        Ok(moto)
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

/// The port the launcher prints once its socket listens.
fn read_port(child: &mut Child, timeout: Duration) -> anyhow::Result<u16> {
    let stdout = child.stdout.take().context("moto's stdout is not piped")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let read = reader.read_line(&mut line);
        let _ = tx.send(read.map(|_| line));
        // moto prints to stdout now and then (warnings from its models): keep
        // reading until it exits, so those writes neither fail nor block.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(line)) if !line.is_empty() => line
            .trim()
            .parse()
            .with_context(|| format!("moto printed {line:?} instead of its port")),
        Ok(Ok(_)) => match child.try_wait()? {
            Some(status) => bail!("moto exited during start-up: {status}"),
            None => bail!("moto closed its stdout without printing its port"),
        },
        Ok(Err(e)) => Err(e).context("cannot read moto's port"),
        Err(_) => bail!("moto did not start listening within {timeout:?}"),
    }
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
