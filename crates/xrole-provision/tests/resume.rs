//! Crashes at every step, then resume: the same environment, nothing created
//! twice (the gate's counters), and teardown finishes whatever the crash left.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use common::*;
use xrole_provision::{Error, InMemoryJournal, JobId, StepKey, ValidPlan};

async fn crash_then_resume(w: &World, plan: &ValidPlan, step: &StepKey, at: CrashAt) {
    let gate = w.aws.gate();
    gate.reset_counters();
    let job = JobId::new();
    let inner = Arc::new(InMemoryJournal::new());
    let crashing = CrashingJournal {
        inner: inner.clone(),
        step: step.clone(),
        at,
        crashed: Mutex::new(false),
    };
    let r = executor(w, &crashing, job).apply(plan).await;
    assert!(
        matches!(r, Err(Error::Journal(_))),
        "{step} {at:?}: expected the crash, got {r:?}"
    );
    assert!(*crashing.crashed.lock().unwrap());

    let resumed = executor(w, inner.clone(), job).apply(plan).await;
    let must_reconcile = at == CrashAt::AfterIntent && ["vpc", "igw"].contains(&step.as_str());
    assert_eq!(
        must_reconcile,
        matches!(resumed, Err(Error::ReconciliationRequired { .. })),
        "{step} {at:?}: {resumed:?}"
    );
    let env = match resumed {
        Ok(env) => env,
        // A VPC or gateway whose create call may or may not have happened is
        // not created blindly; an operator checks, then asks for it again.
        Err(Error::ReconciliationRequired { steps }) => {
            assert_eq!(at, CrashAt::AfterIntent, "{step}");
            assert_eq!(steps, std::slice::from_ref(step));
            assert!(["vpc", "igw"].contains(&step.as_str()), "{step}");
            let kind = step.as_str();
            assert!(
                tagged(&w.customer.admin_config(), job).await[kind].is_empty(),
                "{step}: nothing to adopt"
            );
            let mut options = fast_options();
            options.recreate = BTreeSet::from([step.clone()]);
            executor(w, inner.clone(), job)
                .with_options(options)
                .apply(plan)
                .await
                .unwrap()
        }
        Err(e) => panic!("{step} {at:?}: resume failed: {e}"),
    };
    let found = tagged(&w.customer.admin_config(), job).await;
    assert_eq!(counts(&found), expected_full(), "{step} {at:?}");
    assert_eq!(found["vpc"], std::slice::from_ref(&env.vpc_id));
    let account = w.customer.account_id();
    for (action, n) in CREATES {
        assert_eq!(
            gate.count_for_account(action, account),
            *n,
            "{step} {at:?}: {action} called more than needed"
        );
    }
    executor(w, inner, job).teardown(plan).await.unwrap();
    assert_eq!(
        counts(&tagged(&w.customer.admin_config(), job).await),
        expected_none(),
        "{step} {at:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_each_create_call_then_resume_finds_what_exists() {
    let w = world().await;
    let plan = full_plan();
    for step in plan.create_step_keys() {
        crash_then_resume(&w, &plan, &step, CrashAt::BeforeResult).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_intent_and_call_then_resume_creates_once() {
    let w = world().await;
    let plan = full_plan();
    for step in plan.create_step_keys() {
        crash_then_resume(&w, &plan, &step, CrashAt::AfterIntent).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_teardown_then_teardown_again_leaves_nothing() {
    let w = world().await;
    let plan = full_plan();
    for step in plan.teardown_step_keys() {
        let job = JobId::new();
        let inner = Arc::new(InMemoryJournal::new());
        executor(&w, inner.clone(), job).apply(&plan).await.unwrap();
        let crashing = CrashingJournal {
            inner: inner.clone(),
            step: step.clone(),
            at: CrashAt::BeforeResult,
            crashed: Mutex::new(false),
        };
        let r = executor(&w, &crashing, job).teardown(&plan).await;
        assert!(matches!(r, Err(Error::Journal(_))), "{step}: {r:?}");
        executor(&w, inner.clone(), job)
            .teardown(&plan)
            .await
            .unwrap();
        assert_eq!(
            counts(&tagged(&w.customer.admin_config(), job).await),
            expected_none(),
            "{step}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_after_a_crashed_apply_finds_unjournaled_resources_by_tags() {
    let w = world().await;
    let plan = full_plan();
    for step in [
        "instance/web/0",
        "db/main",
        "vpc",
        "sg/app",
        "subnet/private/1",
        "rtb/public/assoc/0",
        "igw",
        "igw/attach",
    ] {
        let step = StepKey::new(step).unwrap();
        let job = JobId::new();
        let inner = Arc::new(InMemoryJournal::new());
        let crashing = CrashingJournal {
            inner: inner.clone(),
            step: step.clone(),
            at: CrashAt::BeforeResult,
            crashed: Mutex::new(false),
        };
        assert!(executor(&w, &crashing, job).apply(&plan).await.is_err());
        executor(&w, inner.clone(), job)
            .teardown(&plan)
            .await
            .unwrap();
        assert_eq!(
            counts(&tagged(&w.customer.admin_config(), job).await),
            expected_none(),
            "{step}"
        );
    }
}
