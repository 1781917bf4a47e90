//! `EnvironmentPlan` from arbitrary JSON, then `validate`: never panics
//! (names, zones and instance types in any Unicode); a plan that validates
//! prints back to JSON that parses and validates to the same plan, and its
//! subnets lie inside its VPC.
//!
//! The plan's and the CIDR parser's source files are compiled in directly:
//! depending on xrole-provision would build the AWS SDK with sanitizers.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/xrole-provision/src/cidr.rs"]
mod cidr;

/// Stand-in for xrole-provision's `error.rs`: what `plan.rs` uses.
#[allow(dead_code)]
mod error {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct PlanProblem {
        pub field: String,
        pub reason: String,
    }

    #[derive(Debug)]
    pub enum Error {
        InvalidPlan { problems: Vec<PlanProblem> },
    }
}

#[allow(dead_code)]
#[path = "../../crates/xrole-provision/src/plan.rs"]
mod plan;

use plan::EnvironmentPlan;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = serde_json::from_slice::<EnvironmentPlan>(data) else {
        return;
    };
    match p.clone().validate() {
        Ok(valid) => {
            assert_eq!(valid.plan(), &p);
            let vpc = p.vpc.cidr.as_ipv4();
            for s in valid.public_subnets().iter().chain(valid.private_subnets()) {
                assert!(vpc.contains(&s.as_ipv4()), "{s} outside {vpc}");
            }
            let text = serde_json::to_string(&p).unwrap();
            let back: EnvironmentPlan = serde_json::from_str(&text).unwrap();
            assert_eq!(back, p);
            assert!(back.validate().is_ok());
        }
        Err(error::Error::InvalidPlan { problems }) => assert!(!problems.is_empty()),
    }
});
