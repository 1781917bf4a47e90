//! The gate binary in front of moto, driven by a boto3 script: the same
//! allow/deny results as the aws-sdk-sts tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use xrole_testkit::{Moto, python};

/// The gate process; killed when dropped (and it exits by itself when our
/// end of its stdin closes).
struct GateProcess {
    child: Child,
    endpoint: String,
}

impl GateProcess {
    fn start(upstream: &str) -> GateProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_xrole-testkit"))
            .args([
                "gate",
                "--upstream",
                upstream,
                "--listen",
                "127.0.0.1:0",
                "--stop-on-stdin-eof",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let endpoint = line
            .strip_prefix("xrole gate listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        GateProcess { child, endpoint }
    }
}

impl Drop for GateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn boto3_sees_the_same_decisions_through_the_gate_binary() {
    let moto = Moto::start().unwrap();
    let gate = GateProcess::start(&moto.endpoint());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/gate_check.py");
    let out = Command::new(python().unwrap())
        .args([script, "--gate", &gate.endpoint, "--moto", &moto.endpoint()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gate_check.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = serde_json::json!({
        "right_external_id": "allow",
        "wrong_external_id": "AccessDenied",
        "missing_external_id": "AccessDenied",
        "other_account_principal": "AccessDenied",
        "absent_role": "AccessDenied",
        "chained_without_permission": "AccessDenied",
        "describe_without_permission": "UnauthorizedOperation",
        "describe_vpcs": "allow",
        "describe_vpcs_denied_count": 1,
        "describe_subnets_enforcement_off": "allow",
        "describe_subnets": "UnauthorizedOperation",
        "chained_7200": "ValidationError",
        "chained_3600": "allow",
        "direct_7200": "allow",
        "over_max_session": "ValidationError",
        "session_name_too_short": "ValidationError",
        "external_id_bad_chars": "ValidationError",
        "source_identity_not_allowed": "AccessDenied",
        "throttled": "Throttling",
        "after_throttling": "allow",
        "open_without_external_id": "allow",
        // Every AssumeRole above names a role of the customer's account.
        "assume_role_count_for_customer": 16,
    });
    assert_eq!(results, expected);
}

#[test]
fn the_gate_binary_exits_when_its_stdin_closes() {
    let moto = Moto::start().unwrap();
    let mut gate = GateProcess::start(&moto.endpoint());
    let addr = gate.endpoint.trim_start_matches("http://").to_owned();
    assert!(std::net::TcpStream::connect(&addr).is_ok());
    drop(gate.child.stdin.take());
    let status = gate.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(std::net::TcpStream::connect(&addr).is_err());
}
