//! The one diesel schema for both backends. Only portable column types:
//! `Text` (UUID ids, enums, JSON), `BigInt` (unix milliseconds), `Binary`
//! (sealed values, hashes), `Bool`, `Integer`.

diesel::table! {
    organizations (id) {
        id -> Text,
        name -> Text,
        created_ms -> BigInt,
        updated_ms -> BigInt,
        operators_may_destroy -> Bool,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        org_id -> Text,
        email -> Text,
        display_name -> Text,
        role -> Text,
        password_hash -> Nullable<Text>,
        disabled -> Bool,
        created_ms -> BigInt,
        updated_ms -> BigInt,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        org_id -> Text,
        key_id -> Text,
        key_hash -> Binary,
        name -> Text,
        owner_user_id -> Nullable<Text>,
        created_ms -> BigInt,
        last_used_ms -> Nullable<BigInt>,
        expires_ms -> Nullable<BigInt>,
        revoked_ms -> Nullable<BigInt>,
        role -> Nullable<Text>,
    }
}

diesel::table! {
    aws_account_links (id) {
        id -> Text,
        org_id -> Text,
        name -> Text,
        state -> Text,
        aws_account_id -> Text,
        role_arn -> Nullable<Text>,
        access_level -> Text,
        external_id_sealed -> Binary,
        external_id_index -> Binary,
        callback_secret_sealed -> Binary,
        callback_secret_expires_ms -> BigInt,
        stack_id -> Nullable<Text>,
        region -> Nullable<Text>,
        last_callback_ms -> Nullable<BigInt>,
        last_verified_ms -> Nullable<BigInt>,
        last_verification_result -> Nullable<Text>,
        last_error -> Nullable<Text>,
        created_ms -> BigInt,
        updated_ms -> BigInt,
        generation -> BigInt,
        trust_policy_audit -> Nullable<Text>,
        connection_id -> Nullable<Text>,
    }
}

diesel::table! {
    aws_org_connections (id) {
        id -> Text,
        org_id -> Text,
        name -> Text,
        access_level -> Text,
        region -> Text,
        management_account_id -> Nullable<Text>,
        external_id_sealed -> Binary,
        external_id_index -> Binary,
        callback_secret_sealed -> Binary,
        created_ms -> BigInt,
        updated_ms -> BigInt,
    }
}

diesel::table! {
    seen_webhook_ids (webhook_id) {
        webhook_id -> Text,
        received_ms -> BigInt,
    }
}

diesel::table! {
    jobs (id) {
        id -> Text,
        org_id -> Text,
        link_id -> Nullable<Text>,
        kind -> Text,
        payload -> Text,
        state -> Text,
        attempts -> Integer,
        max_attempts -> Integer,
        run_after_ms -> BigInt,
        lease_owner -> Nullable<Text>,
        lease_token -> Nullable<Text>,
        lease_expires_ms -> Nullable<BigInt>,
        progress_done -> BigInt,
        progress_total -> BigInt,
        result -> Nullable<Text>,
        error -> Nullable<Text>,
        created_ms -> BigInt,
        updated_ms -> BigInt,
        started_ms -> Nullable<BigInt>,
        finished_ms -> Nullable<BigInt>,
    }
}

diesel::table! {
    keyring_instances (instance) {
        instance -> Text,
        primary_key_id -> BigInt,
        seen_ms -> BigInt,
    }
}

diesel::table! {
    job_org_turns (org_id) {
        org_id -> Text,
        last_claim_ms -> BigInt,
    }
}

diesel::table! {
    job_steps (id) {
        id -> Text,
        org_id -> Text,
        job_id -> Text,
        step_key -> Text,
        intent -> Text,
        aws_id -> Nullable<Text>,
        created_ms -> BigInt,
        completed_ms -> Nullable<BigInt>,
    }
}

diesel::table! {
    resources (id) {
        id -> Text,
        org_id -> Text,
        link_id -> Text,
        job_id -> Nullable<Text>,
        kind -> Text,
        aws_id -> Text,
        region -> Text,
        parent_id -> Nullable<Text>,
        state -> Text,
        tags -> Text,
        created_ms -> BigInt,
        updated_ms -> BigInt,
    }
}

diesel::table! {
    idempotency_records (id) {
        id -> Text,
        org_id -> Text,
        principal -> Text,
        method -> Text,
        route -> Text,
        idempotency_key -> Text,
        fingerprint -> Binary,
        state -> Text,
        lock_token -> Nullable<Text>,
        locked_until_ms -> BigInt,
        response_status -> Nullable<Integer>,
        response_headers -> Nullable<Text>,
        response_body -> Nullable<Binary>,
        created_ms -> BigInt,
        expires_ms -> BigInt,
    }
}

diesel::table! {
    audit_events (id) {
        id -> Text,
        org_id -> Text,
        actor -> Text,
        action -> Text,
        target -> Nullable<Text>,
        request_id -> Nullable<Text>,
        source_ip -> Nullable<Text>,
        at_ms -> BigInt,
        details -> Text,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    organizations,
    users,
    api_keys,
    aws_account_links,
    aws_org_connections,
    seen_webhook_ids,
    jobs,
    job_org_turns,
    job_steps,
    keyring_instances,
    resources,
    idempotency_records,
    audit_events,
);
