//! The gate decides `AssumeRole` like AWS, seen through the real `aws-sdk-sts`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gate_support;

use gate_support::*;
use serde_json::json;

#[tokio::test]
async fn right_external_id_yields_the_customers_assumed_role() {
    let (aws, customer, role) = setup().await;
    let sts = saas_sts(&aws);
    let me = sts.get_caller_identity().send().await.unwrap();
    assert_eq!(me.arn(), Some(aws.saas_principal_arn().as_str()));
    assert_eq!(me.account(), Some(aws.saas_account_id().as_str()));
    assert_eq!(
        aws.saas_principal_arn(),
        format!("arn:aws:iam::{}:user/xrole-saas", aws.saas_account_id())
    );

    let out = sts
        .assume_role()
        .role_arn(&role)
        .role_session_name("xrole-org-verify")
        .external_id(EXT)
        .send()
        .await
        .unwrap();
    let who = session_sts(&aws, out.credentials().unwrap())
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    assert_eq!(who.account(), Some(customer.account_id()));
    let expected = format!(
        "arn:aws:sts::{}:assumed-role/xrole/xrole-org-verify",
        customer.account_id()
    );
    assert_eq!(who.arn(), Some(expected.as_str()));
    assert_eq!(out.assumed_role_user().unwrap().arn(), expected);
    assert_ne!(customer.account_id(), aws.saas_account_id());
}

#[tokio::test]
async fn wrong_or_missing_external_id_is_access_denied() {
    let (aws, _customer, role) = setup().await;
    let sts = saas_sts(&aws);
    let wrong = sts
        .assume_role()
        .role_arn(&role)
        .role_session_name("s1")
        .external_id("xrole-ext-other")
        .send()
        .await;
    let (code, message) = error(wrong);
    assert_eq!(code, "AccessDenied");
    assert_eq!(
        message,
        format!(
            "User: {} is not authorized to perform: sts:AssumeRole on resource: {role}",
            aws.saas_principal_arn()
        )
    );
    let missing = sts
        .assume_role()
        .role_arn(&role)
        .role_session_name("s1")
        .send()
        .await;
    assert_eq!(code_of(missing), "AccessDenied");
    // A different case is a different External ID (StringEquals is case-sensitive).
    let upper = sts
        .assume_role()
        .role_arn(&role)
        .role_session_name("s1")
        .external_id(EXT.to_uppercase())
        .send()
        .await;
    assert_eq!(code_of(upper), "AccessDenied");
}

fn code_of<
    T: std::fmt::Debug,
    E: aws_sdk_sts::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
>(
    r: Result<T, aws_sdk_sts::error::SdkError<E, R>>,
) -> String {
    code(r)
}

#[tokio::test]
async fn a_principal_from_another_account_is_access_denied() {
    let (aws, _customer, role) = setup().await;
    // Another account's identity, with the right External ID, through the gate.
    let other = aws.customer().await.unwrap();
    let intruder = no_retry_sts(&admin_through_gate(&aws, &other).await);
    let who = intruder.get_caller_identity().send().await.unwrap();
    assert_eq!(who.account(), Some(other.account_id()));
    let r = intruder
        .assume_role()
        .role_arn(&role)
        .role_session_name("s1")
        .external_id(EXT)
        .send()
        .await;
    let (code, message) = error(r);
    assert_eq!(code, "AccessDenied");
    assert!(
        message.starts_with(&format!("User: {} is not authorized", who.arn().unwrap())),
        "{message}"
    );
}

#[tokio::test]
async fn principal_forms_root_user_role_and_wildcard() {
    let (aws, customer, _role) = setup().await;
    let saas = aws.saas_account_id();
    let sts = saas_sts(&aws);
    let other = aws.customer().await.unwrap();
    let stranger = no_retry_sts(&admin_through_gate(&aws, &other).await);
    let ok = |r: &Result<_, _>| r.is_ok();

    // arn:aws:iam::SAAS:root: any principal of the SaaS account, nobody else.
    let root = customer
        .create_role(
            "root-trust",
            &trust(
                json!({"AWS": format!("arn:aws:iam::{saas}:root")}),
                &["sts:AssumeRole"],
                json!(null),
            ),
            3600,
        )
        .await
        .unwrap();
    assert!(ok(&sts
        .assume_role()
        .role_arn(&root)
        .role_session_name("s1")
        .send()
        .await));
    assert_eq!(
        code(
            stranger
                .assume_role()
                .role_arn(&root)
                .role_session_name("s1")
                .send()
                .await
        ),
        "AccessDenied"
    );
    // A bare account id means the same as its root.
    let bare = customer
        .create_role(
            "bare-trust",
            &trust(json!({"AWS": saas}), &["sts:AssumeRole"], json!(null)),
            3600,
        )
        .await
        .unwrap();
    assert!(ok(&sts
        .assume_role()
        .role_arn(&bare)
        .role_session_name("s1")
        .send()
        .await));

    // A user ARN: that user only.
    let other_user = format!("arn:aws:iam::{saas}:user/someone-else");
    let user = customer
        .create_role(
            "user-trust",
            &trust(
                json!({"AWS": [other_user]}),
                &["sts:AssumeRole"],
                json!(null),
            ),
            3600,
        )
        .await
        .unwrap();
    assert_eq!(
        code(
            sts.assume_role()
                .role_arn(&user)
                .role_session_name("s1")
                .send()
                .await
        ),
        "AccessDenied"
    );

    // "*": everyone, including other accounts.
    let star = customer
        .create_role(
            "star-trust",
            &trust(json!("*"), &["sts:AssumeRole"], json!(null)),
            3600,
        )
        .await
        .unwrap();
    assert!(ok(&stranger
        .assume_role()
        .role_arn(&star)
        .role_session_name("s1")
        .send()
        .await));
    let star_aws = customer
        .create_role(
            "star-aws-trust",
            &trust(json!({"AWS": "*"}), &["sts:AssumeRole"], json!(null)),
            3600,
        )
        .await
        .unwrap();
    assert!(ok(&stranger
        .assume_role()
        .role_arn(&star_aws)
        .role_session_name("s1")
        .send()
        .await));

    // A role ARN: sessions of that role, not the user that could assume it.
    let xrole_arn = format!("arn:aws:iam::{}:role/xrole", customer.account_id());
    let chained = customer
        .create_role(
            "role-trust",
            &trust(json!({"AWS": xrole_arn}), &["sts:AssumeRole"], json!(null)),
            3600,
        )
        .await
        .unwrap();
    assert_eq!(
        code(
            sts.assume_role()
                .role_arn(&chained)
                .role_session_name("s1")
                .send()
                .await
        ),
        "AccessDenied"
    );
    let session = assume(&aws, &xrole_arn, "hop1").await;
    // The trust policy lets the role's sessions in, but the session's own
    // role must also allow sts:AssumeRole (the gate evaluates both).
    let (code_, message) = error(
        session_sts(&aws, &session)
            .assume_role()
            .role_arn(&chained)
            .role_session_name("hop2")
            .send()
            .await,
    );
    assert_eq!(code_, "AccessDenied");
    assert!(
        message.ends_with("because no identity-based policy allows the sts:AssumeRole action"),
        "{message}"
    );
    allow_role_chaining(&customer, "xrole").await;
    let hop = session_sts(&aws, &session)
        .assume_role()
        .role_arn(&chained)
        .role_session_name("hop2")
        .send()
        .await
        .unwrap();
    assert!(
        hop.assumed_role_user()
            .unwrap()
            .arn()
            .ends_with(":assumed-role/role-trust/hop2")
    );

    // A service principal never matches an IAM caller.
    let service = customer
        .create_role(
            "svc-trust",
            &trust(
                json!({"Service": "ec2.amazonaws.com"}),
                &["sts:AssumeRole"],
                json!(null),
            ),
            3600,
        )
        .await
        .unwrap();
    assert_eq!(
        code(
            sts.assume_role()
                .role_arn(&service)
                .role_session_name("s1")
                .send()
                .await
        ),
        "AccessDenied"
    );
}

#[tokio::test]
async fn string_like_and_principal_arn_conditions_and_missing_keys() {
    let (aws, customer, _role) = setup().await;
    let sts = saas_sts(&aws);
    let me = json!({"AWS": aws.saas_principal_arn()});
    let like = customer
        .create_role(
            "like",
            &trust(
                me.clone(),
                &["sts:AssumeRole"],
                json!({"StringLike": {"sts:ExternalId": ["xrole-*", "legacy-??"]}}),
            ),
            3600,
        )
        .await
        .unwrap();
    let try_ext = |role: String, ext: Option<&'static str>| {
        let sts = sts.clone();
        async move {
            sts.assume_role()
                .role_arn(role)
                .role_session_name("s1")
                .set_external_id(ext.map(str::to_owned))
                .send()
                .await
        }
    };
    assert!(try_ext(like.clone(), Some("xrole-anything")).await.is_ok());
    assert!(try_ext(like.clone(), Some("legacy-42")).await.is_ok());
    assert_eq!(
        code(try_ext(like.clone(), Some("legacy-421")).await),
        "AccessDenied"
    );
    assert_eq!(
        code(try_ext(like.clone(), Some("other-xrole-1")).await),
        "AccessDenied"
    );
    // A missing key fails the condition even when the pattern is "*".
    let any = customer
        .create_role(
            "any-ext",
            &trust(
                me.clone(),
                &["sts:AssumeRole"],
                json!({"StringLike": {"sts:ExternalId": "*"}}),
            ),
            3600,
        )
        .await
        .unwrap();
    assert!(try_ext(any.clone(), Some("whatever")).await.is_ok());
    assert_eq!(code(try_ext(any, None).await), "AccessDenied");

    // aws:PrincipalArn, exact and with wildcards.
    let saas_arn = aws.saas_principal_arn();
    let pa = customer
        .create_role(
            "principal-arn",
            &trust(
                json!("*"),
                &["sts:AssumeRole"],
                json!({"StringEquals": {"aws:PrincipalArn": saas_arn, "sts:ExternalId": EXT}}),
            ),
            3600,
        )
        .await
        .unwrap();
    assert!(try_ext(pa.clone(), Some(EXT)).await.is_ok());
    let other = aws.customer().await.unwrap();
    let stranger = no_retry_sts(&admin_through_gate(&aws, &other).await);
    let r = stranger
        .assume_role()
        .role_arn(&pa)
        .role_session_name("s1")
        .external_id(EXT)
        .send()
        .await;
    assert_eq!(code(r), "AccessDenied");
    let pa_like = customer
        .create_role(
            "principal-arn-like",
            &trust(json!("*"), &["sts:AssumeRole"], json!({"StringLike": {"aws:PrincipalArn": format!("arn:aws:iam::{}:user/xrole-*", aws.saas_account_id())}})),
            3600,
        )
        .await
        .unwrap();
    assert!(try_ext(pa_like.clone(), None).await.is_ok());
    let r = stranger
        .assume_role()
        .role_arn(&pa_like)
        .role_session_name("s1")
        .send()
        .await;
    assert_eq!(code(r), "AccessDenied");

    // An explicit Deny beats the Allow.
    let denying = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": me, "Action": "sts:AssumeRole"},
        {"Effect": "Deny", "Principal": "*", "Action": "sts:AssumeRole",
         "Condition": {"StringEquals": {"sts:ExternalId": "revoked"}}}]});
    let deny = customer
        .create_role("deny", &denying.to_string(), 3600)
        .await
        .unwrap();
    assert!(try_ext(deny.clone(), Some("fine")).await.is_ok());
    assert_eq!(code(try_ext(deny, Some("revoked")).await), "AccessDenied");
}

#[tokio::test]
async fn principal_arn_of_a_role_session_is_the_role_arn_with_its_path() {
    let (aws, customer, _role) = setup().await;
    let iam = aws_sdk_iam::Client::new(&customer.admin_config());
    let hop = iam
        .create_role()
        .role_name("hop")
        .path("/team/")
        .assume_role_policy_document(trust(
            json!({"AWS": aws.saas_principal_arn()}),
            &["sts:AssumeRole"],
            json!(null),
        ))
        .send()
        .await
        .unwrap();
    let hop_arn = hop.role().unwrap().arn().to_owned();
    assert!(hop_arn.ends_with(":role/team/hop"));
    let target = |arn: &str| {
        trust(
            json!({"AWS": format!("arn:aws:iam::{}:root", customer.account_id())}),
            &["sts:AssumeRole"],
            json!({"StringEquals": {"aws:PrincipalArn": arn}}),
        )
    };
    let with_path = customer
        .create_role("with-path", &target(&hop_arn), 3600)
        .await
        .unwrap();
    let without = format!("arn:aws:iam::{}:role/hop", customer.account_id());
    let without_path = customer
        .create_role("without-path", &target(&without), 3600)
        .await
        .unwrap();

    allow_role_chaining(&customer, "hop").await;
    let out = saas_sts(&aws)
        .assume_role()
        .role_arn(&hop_arn)
        .role_session_name("hop1")
        .send()
        .await
        .unwrap();
    let chained = session_sts(&aws, out.credentials().unwrap());
    let r = chained
        .assume_role()
        .role_arn(&with_path)
        .role_session_name("hop2")
        .send()
        .await;
    assert!(r.is_ok(), "{r:?}");
    let r = chained
        .assume_role()
        .role_arn(&without_path)
        .role_session_name("hop2")
        .send()
        .await;
    assert_eq!(code(r), "AccessDenied");
}

#[tokio::test]
async fn source_identity_and_session_tags_need_their_actions() {
    let (aws, customer, role) = setup().await;
    let sts = saas_sts(&aws);
    let tag = aws_sdk_sts::types::Tag::builder()
        .key("xrole:org")
        .value("org-1")
        .build()
        .unwrap();
    // The xrole role allows both.
    let out = sts
        .assume_role()
        .role_arn(&role)
        .role_session_name("s1")
        .external_id(EXT)
        .source_identity("alice@example.com")
        .tags(tag.clone())
        .send()
        .await;
    assert!(out.is_ok(), "{out:?}");

    let plain = customer
        .create_role(
            "plain",
            &trust(
                json!({"AWS": aws.saas_principal_arn()}),
                &["sts:AssumeRole"],
                json!(null),
            ),
            3600,
        )
        .await
        .unwrap();
    assert!(
        sts.assume_role()
            .role_arn(&plain)
            .role_session_name("s1")
            .send()
            .await
            .is_ok()
    );
    let (code, message) = error(
        sts.assume_role()
            .role_arn(&plain)
            .role_session_name("s1")
            .source_identity("alice")
            .send()
            .await,
    );
    assert_eq!(code, "AccessDenied");
    assert!(
        message.contains("not authorized to perform: sts:SetSourceIdentity on resource"),
        "{message}"
    );
    let (code, message) = error(
        sts.assume_role()
            .role_arn(&plain)
            .role_session_name("s1")
            .tags(tag.clone())
            .send()
            .await,
    );
    assert_eq!(code, "AccessDenied");
    assert!(
        message.contains("not authorized to perform: sts:TagSession on resource"),
        "{message}"
    );
    let r = sts
        .assume_role()
        .role_arn(&plain)
        .role_session_name("s1")
        .transitive_tag_keys("xrole:org")
        .send()
        .await;
    assert_eq!(gate_support::code(r), "AccessDenied");

    let tags_only = customer
        .create_role(
            "tags-only",
            &trust(
                json!({"AWS": aws.saas_principal_arn()}),
                &["sts:AssumeRole", "sts:TagSession"],
                json!(null),
            ),
            3600,
        )
        .await
        .unwrap();
    assert!(
        sts.assume_role()
            .role_arn(&tags_only)
            .role_session_name("s1")
            .tags(tag)
            .send()
            .await
            .is_ok()
    );
    let r = sts
        .assume_role()
        .role_arn(&tags_only)
        .role_session_name("s1")
        .source_identity("alice")
        .send()
        .await;
    assert_eq!(gate_support::code(r), "AccessDenied");
}

#[tokio::test]
async fn durations_follow_max_session_and_role_chaining() {
    let (aws, customer, role) = setup().await;
    let sts = saas_sts(&aws);
    let ask = |role: String, secs: i32| {
        let sts = sts.clone();
        async move {
            sts.assume_role()
                .role_arn(role)
                .role_session_name("s1")
                .external_id(EXT)
                .duration_seconds(secs)
                .send()
                .await
        }
    };
    assert!(ask(role.clone(), 900).await.is_ok());
    assert!(ask(role.clone(), 3600).await.is_ok());
    let (code, message) = error(ask(role.clone(), 899).await);
    assert_eq!(code, "ValidationError");
    assert!(
        message.contains("Member must have value greater than or equal to 900"),
        "{message}"
    );
    let (code, message) = error(ask(role.clone(), 3601).await);
    assert_eq!(code, "ValidationError");
    assert_eq!(
        message,
        "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
    );
    let (code, message) = error(ask(role.clone(), 43201).await);
    assert_eq!(code, "ValidationError");
    assert!(message.contains("less than or equal to 43200"), "{message}");

    // A 12-hour role: the SaaS user may ask 7200 s, a role session may not.
    let xrole_arn = format!("arn:aws:iam::{}:role/xrole", customer.account_id());
    let long = customer
        .create_role(
            "long",
            &trust(
                json!({"AWS": [aws.saas_principal_arn(), xrole_arn]}),
                &["sts:AssumeRole"],
                json!(null),
            ),
            43200,
        )
        .await
        .unwrap();
    let direct = sts
        .assume_role()
        .role_arn(&long)
        .role_session_name("s1")
        .duration_seconds(7200)
        .send()
        .await;
    assert!(direct.is_ok(), "{direct:?}");
    allow_role_chaining(&customer, "xrole").await;
    let session = assume(&aws, &role, "hop1").await;
    let chained = session_sts(&aws, &session);
    let r = chained
        .assume_role()
        .role_arn(&long)
        .role_session_name("hop2")
        .duration_seconds(7200)
        .send()
        .await;
    let (code, message) = error(r);
    assert_eq!(code, "ValidationError");
    assert_eq!(
        message,
        "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining."
    );
    let r = chained
        .assume_role()
        .role_arn(&long)
        .role_session_name("hop2")
        .duration_seconds(3600)
        .send()
        .await;
    assert!(r.is_ok(), "{r:?}");
}

#[tokio::test]
async fn session_name_and_external_id_syntax() {
    let (aws, _customer, role) = setup().await;
    let sts = saas_sts(&aws);
    let ask = |name: String, ext: String| {
        let (sts, role) = (sts.clone(), role.clone());
        async move {
            sts.assume_role()
                .role_arn(role)
                .role_session_name(name)
                .external_id(ext)
                .send()
                .await
        }
    };
    let valid_name = "xrole-org_1=a,b.c@d+e".to_owned();
    assert!(ask(valid_name.clone(), EXT.into()).await.is_ok());
    assert!(ask("a".repeat(64), EXT.into()).await.is_ok());
    for bad in [
        "a".to_owned(),
        "a".repeat(65),
        "has space".to_owned(),
        "colon:no".to_owned(),
        "slash/no".to_owned(),
    ] {
        let (code, message) = error(ask(bad.clone(), EXT.into()).await);
        assert_eq!(code, "ValidationError", "session name {bad:?}");
        assert!(message.contains("'roleSessionName'"), "{message}");
    }
    for bad in [
        "e".to_owned(),
        "e".repeat(1225),
        "has space".to_owned(),
        "semi;colon".to_owned(),
    ] {
        let (code, message) = error(ask(valid_name.clone(), bad.clone()).await);
        assert_eq!(code, "ValidationError", "external id {bad:?}");
        assert!(message.contains("'externalId'"), "{message}");
    }
    // Syntactically valid but wrong: the trust policy answers, not the syntax check.
    for wrong in ["ab", "a:b/c=d+e,f.g@h-i_j", &"e".repeat(1224)] {
        assert_eq!(
            code(ask(valid_name.clone(), wrong.to_owned()).await),
            "AccessDenied",
            "external id {wrong:?}"
        );
    }
}

#[tokio::test]
async fn missing_or_misnamed_roles_are_access_denied() {
    let (aws, customer, role) = setup().await;
    let sts = saas_sts(&aws);
    let absent = format!("arn:aws:iam::{}:role/absent", customer.account_id());
    let (code, message) = error(
        sts.assume_role()
            .role_arn(&absent)
            .role_session_name("s1")
            .external_id(EXT)
            .send()
            .await,
    );
    assert_eq!(code, "AccessDenied");
    assert!(
        message.ends_with(&format!("on resource: {absent}")),
        "{message}"
    );
    let wrong_path = format!("arn:aws:iam::{}:role/team/xrole", customer.account_id());
    let r = sts
        .assume_role()
        .role_arn(&wrong_path)
        .role_session_name("s1")
        .external_id(EXT)
        .send()
        .await;
    assert_eq!(gate_support::code(r), "AccessDenied");
    let other = aws.customer().await.unwrap();
    let elsewhere = role.replace(customer.account_id(), other.account_id());
    let r = sts
        .assume_role()
        .role_arn(&elsewhere)
        .role_session_name("s1")
        .external_id(EXT)
        .send()
        .await;
    assert_eq!(gate_support::code(r), "AccessDenied");
}

#[tokio::test]
async fn denials_have_the_sts_xml_error_shape() {
    let (aws, _customer, role) = setup().await;
    let body = format!(
        "Action=AssumeRole&Version=2011-06-15&RoleSessionName=s1&RoleArn={}",
        url_encode(&role)
    );
    let key = aws_credential_types::provider::ProvideCredentials::provide_credentials(
        aws.saas_config().credentials_provider().unwrap().as_ref(),
    )
    .await
    .unwrap();
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={}/20260101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=0",
        key.access_key_id()
    );
    let (status, text) = raw_post(&aws.endpoint(), &auth, &body).await;
    assert_eq!(status, 403);
    assert!(
        text.starts_with("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"),
        "{text}"
    );
    assert!(text.contains("<Type>Sender</Type>"), "{text}");
    assert!(text.contains("<Code>AccessDenied</Code>"), "{text}");
    assert!(text.contains("<RequestId>"), "{text}");

    // An AssumeRole in a JSON protocol is refused, never passed through undecided.
    let (status, text) = raw_request(
        &aws.endpoint(),
        &auth,
        "application/x-amz-json-1.1",
        Some("AWSSecurityTokenServiceV20110615.AssumeRole"),
        &serde_json::json!({"RoleArn": role, "RoleSessionName": "s1"}).to_string(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.contains("InvalidAction"), "{text}");

    // A key moto does not know is rejected as AWS would.
    let unknown = "AWS4-HMAC-SHA256 Credential=AKIAUNKNOWNUNKNOWN00/20260101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=0";
    let (status, text) = raw_post(&aws.endpoint(), unknown, &body).await;
    assert_eq!(status, 403);
    assert!(text.contains("<Code>InvalidClientTokenId</Code>"), "{text}");
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A bare HTTP/1.1 POST with a form body, returning status and body.
async fn raw_post(endpoint: &str, auth: &str, body: &str) -> (u16, String) {
    raw_request(
        endpoint,
        auth,
        "application/x-www-form-urlencoded",
        None,
        body,
    )
    .await
}

/// A bare HTTP/1.1 POST, returning status and body.
async fn raw_request(
    endpoint: &str,
    auth: &str,
    content_type: &str,
    target: Option<&str>,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = endpoint.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let target = target
        .map(|t| format!("X-Amz-Target: {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n{target}\
         Authorization: {auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
