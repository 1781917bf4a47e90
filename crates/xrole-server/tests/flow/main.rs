//! The AWS flow end to end: link an account, deploy the customer template
//! into a moto account, run its Lambda, verify, provision, tear down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod callbacks;
mod fairness;
mod hostile;
mod leases;
mod links;
mod org_scale;
mod organizations;
mod whole_flow;
