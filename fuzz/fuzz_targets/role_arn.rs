//! `RoleArn::parse` (and the other identifiers of xrole-assume's `types.rs`)
//! on arbitrary text: never panics; an accepted ARN keeps its text and its
//! parts reassemble it.
//!
//! The parser's source file is compiled in directly: depending on
//! xrole-assume would build the AWS SDK with sanitizers.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// Stand-in for `xrole_assume::Error`: the only variant `types.rs` builds.
#[derive(Debug)]
#[allow(dead_code)]
pub enum Error {
    InvalidSpec { reason: String },
}

#[allow(dead_code)]
#[path = "../../crates/xrole-assume/src/types.rs"]
mod types;

use types::{AwsAccountId, RoleArn, SessionName};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(arn) = RoleArn::parse(s) {
        assert_eq!(arn.as_str(), s);
        assert_eq!(arn.to_string(), s);
        let account = arn.account_id();
        assert_eq!(account.as_str().len(), 12);
        assert!(account.as_str().bytes().all(|b| b.is_ascii_digit()));
        assert!(arn.path().starts_with('/') && arn.path().ends_with('/'));
        assert!(!arn.name().is_empty() && arn.name().len() <= 64);
        let rebuilt = format!(
            "arn:{}:iam::{}:role{}{}",
            arn.partition().as_str(),
            account.as_str(),
            arn.path(),
            arn.name()
        );
        assert_eq!(rebuilt, s);
        let again = RoleArn::parse(&rebuilt).unwrap();
        assert_eq!(again.name(), arn.name());
    }
    if let Ok(id) = AwsAccountId::parse(s) {
        assert_eq!(id.as_str(), s);
    }
    if let Ok(n) = SessionName::parse(s) {
        assert_eq!(n.as_str(), s);
        assert!((2..=64).contains(&s.len()));
    }
});
