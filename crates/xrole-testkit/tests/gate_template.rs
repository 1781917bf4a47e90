//! The project's role template (`cloudformation/xrole-role.yaml`), deployed
//! into a moto account with CloudFormation and evaluated by the gate: each
//! promise the template makes to the customer is a request that must pass
//! or fail. (xrole-provision's `template_role` tests run the real executor
//! against the same role.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gate_support;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use gate_support::*;
use xrole_testkit::{AccessLevel, Aws, CustomerAccount, Verdict};

/// moto + gate, a customer, the template's role at `level`, and a session of it.
async fn stack(level: AccessLevel) -> (Aws, CustomerAccount, String, SdkConfig) {
    let aws = Aws::start().await.unwrap();
    let customer = aws.customer().await.unwrap();
    let role = customer
        .deploy_role_template(&aws.saas_principal_arn(), EXT, level)
        .await
        .unwrap();
    let session = aws.config_for(creds(&assume(&aws, &role, "xrole-acme-provision").await));
    (aws, customer, role, session)
}

fn ec2(config: &SdkConfig) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::config::Builder::from(config)
            .retry_config(RetryConfig::disabled())
            .build(),
    )
}

fn rds(config: &SdkConfig) -> aws_sdk_rds::Client {
    aws_sdk_rds::Client::from_conf(
        aws_sdk_rds::config::Builder::from(config)
            .retry_config(RetryConfig::disabled())
            .build(),
    )
}

/// xrole's tags on a new resource of type `rt`, plus `extra`.
fn xrole_tags(rt: ResourceType, extra: &[(&str, &str)]) -> TagSpecification {
    let mut tags = vec![
        ("xrole:managed-by", "xrole"),
        ("xrole:org", "org_acme"),
        ("xrole:job", "job-1"),
        ("Name", "acme"),
    ];
    tags.extend_from_slice(extra);
    TagSpecification::builder()
        .resource_type(rt)
        .set_tags(Some(
            tags.into_iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

/// A VPC and subnet of the customer's own, untagged by xrole (made directly in moto).
async fn customer_network(customer: &CustomerAccount) -> (String, String) {
    let ec2 = aws_sdk_ec2::Client::new(&customer.admin_config());
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.200.0.0/16")
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Vpc)
                .tags(Tag::builder().key("Name").value("production").build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_owned();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.200.1.0/24")
        .send()
        .await
        .unwrap();
    (
        vpc,
        subnet.subnet().unwrap().subnet_id().unwrap().to_owned(),
    )
}

/// A database of the customer's own (made directly in moto).
async fn customer_database(customer: &CustomerAccount, name: &str) -> String {
    let db = aws_sdk_rds::Client::new(&customer.admin_config())
        .create_db_instance()
        .db_instance_identifier(name)
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("owner")
        .master_user_password("not-a-real-password-0")
        .send()
        .await
        .unwrap();
    db.db_instance()
        .unwrap()
        .db_instance_arn()
        .unwrap()
        .to_owned()
}

fn denied<
    T: std::fmt::Debug,
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
>(
    r: Result<T, aws_sdk_ec2::error::SdkError<E, R>>,
) -> String {
    code(r)
}

#[tokio::test]
async fn read_only_describes_and_is_denied_at_the_first_mutating_call() {
    let (aws, _customer, _role, session) = stack(AccessLevel::ReadOnly).await;
    let ec2 = ec2(&session);
    ec2.describe_vpcs().send().await.unwrap();
    ec2.describe_subnets().send().await.unwrap();
    rds(&session).describe_db_instances().send().await.unwrap();
    // Only the reads xrole makes: nothing else, not even other reads.
    assert_eq!(
        code(ec2.describe_availability_zones().send().await),
        "UnauthorizedOperation"
    );
    // The AMI lookup xrole makes: a public parameter.
    let ssm = aws_sdk_ssm::Client::from_conf(
        aws_sdk_ssm::config::Builder::from(&session)
            .retry_config(RetryConfig::disabled())
            .build(),
    );
    let ami = ssm
        .get_parameter()
        .name("/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")
        .send()
        .await;
    // moto may not hold that parameter; what matters is the gate let it through.
    if let Err(e) = &ami {
        assert_ne!(
            e.as_service_error().and_then(|e| e.meta().code()),
            Some("AccessDeniedException"),
            "{e:?}"
        );
    }

    let create = ec2
        .create_vpc()
        .cidr_block("10.42.0.0/16")
        .tag_specifications(xrole_tags(ResourceType::Vpc, &[]))
        .send()
        .await;
    assert_eq!(denied(create), "UnauthorizedOperation");
    assert_eq!(
        aws.gate().decision_count("ec2:CreateVpc", Verdict::Denied),
        1
    );
    let why = aws.gate().denials().last().unwrap().reason.clone();
    assert_eq!(why, "no identity-based policy allows it");
    assert_eq!(
        denied(ec2.create_internet_gateway().send().await),
        "UnauthorizedOperation"
    );
}

#[tokio::test]
async fn provisioning_creates_only_with_xroles_tags_inside_its_own_network() {
    let (aws, customer, _role, session) = stack(AccessLevel::Provisioning).await;
    let ec2 = ec2(&session);

    // Without xrole's tag, or with a tag key outside xrole:* and Name: denied.
    let untagged = ec2.create_vpc().cidr_block("10.42.0.0/16").send().await;
    assert_eq!(denied(untagged), "UnauthorizedOperation");
    let extra = ec2
        .create_vpc()
        .cidr_block("10.42.0.0/16")
        .tag_specifications(xrole_tags(ResourceType::Vpc, &[("owner", "mallory")]))
        .send()
        .await;
    assert_eq!(denied(extra), "UnauthorizedOperation");

    // With them: the VPC, and a subnet inside it.
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.42.0.0/16")
        .tag_specifications(xrole_tags(ResourceType::Vpc, &[]))
        .send()
        .await
        .unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_owned();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.42.1.0/24")
        .tag_specifications(xrole_tags(ResourceType::Subnet, &[]))
        .send()
        .await
        .unwrap();
    let subnet = subnet.subnet().unwrap().subnet_id().unwrap().to_owned();
    let sg = ec2
        .create_security_group()
        .group_name("acme-app")
        .description("app")
        .vpc_id(&vpc)
        .tag_specifications(xrole_tags(ResourceType::SecurityGroup, &[]))
        .send()
        .await
        .unwrap();
    let sg = sg.group_id().unwrap().to_owned();

    // Never inside the customer's own network.
    let (their_vpc, their_subnet) = customer_network(&customer).await;
    let foreign = ec2
        .create_subnet()
        .vpc_id(&their_vpc)
        .cidr_block("10.200.2.0/24")
        .tag_specifications(xrole_tags(ResourceType::Subnet, &[]))
        .send()
        .await;
    assert_eq!(denied(foreign), "UnauthorizedOperation");
    let decision = aws.gate().denials().last().unwrap().clone();
    assert_eq!(
        decision.resource,
        format!(
            "arn:aws:ec2:us-east-1:{}:vpc/{their_vpc}",
            customer.account_id()
        )
    );
    let images = ec2.describe_images().owners("amazon").send().await.unwrap();
    let ami = images.images()[0].image_id().unwrap().to_owned();
    let launch = |subnet: String| {
        ec2.run_instances()
            .image_id(&ami)
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .subnet_id(subnet)
            .security_group_ids(&sg)
            .tag_specifications(xrole_tags(ResourceType::Instance, &[]))
            .tag_specifications(xrole_tags(ResourceType::Volume, &[]))
            .send()
    };
    assert_eq!(denied(launch(their_subnet).await), "UnauthorizedOperation");
    let instance = launch(subnet).await.unwrap();
    assert_eq!(instance.instances().len(), 1);
}

#[tokio::test]
async fn provisioning_changes_and_deletes_only_what_xrole_tagged() {
    let (aws, customer, _role, session) = stack(AccessLevel::Provisioning).await;
    let ec2 = ec2(&session);
    let (their_vpc, _) = customer_network(&customer).await;
    let ours = ec2
        .create_vpc()
        .cidr_block("10.43.0.0/16")
        .tag_specifications(xrole_tags(ResourceType::Vpc, &[]))
        .send()
        .await
        .unwrap();
    let ours = ours.vpc().unwrap().vpc_id().unwrap().to_owned();

    // Deleting a VPC xrole did not tag: denied, and it is still there.
    assert_eq!(
        denied(ec2.delete_vpc().vpc_id(&their_vpc).send().await),
        "UnauthorizedOperation"
    );
    let still = aws_sdk_ec2::Client::new(&customer.admin_config())
        .describe_vpcs()
        .vpc_ids(&their_vpc)
        .send()
        .await
        .unwrap();
    assert_eq!(still.vpcs().len(), 1);
    // Tagging it xrole's, to take it over: denied (tags only while creating).
    let takeover = ec2
        .create_tags()
        .resources(&their_vpc)
        .tags(
            Tag::builder()
                .key("xrole:managed-by")
                .value("xrole")
                .build(),
        )
        .send()
        .await;
    assert_eq!(denied(takeover), "UnauthorizedOperation");
    // Even xrole's own VPC is not re-tagged after creation.
    let retag = ec2
        .create_tags()
        .resources(&ours)
        .tags(Tag::builder().key("Name").value("renamed").build())
        .send()
        .await;
    assert_eq!(denied(retag), "UnauthorizedOperation");
    let modify = ec2
        .modify_vpc_attribute()
        .vpc_id(&their_vpc)
        .enable_dns_hostnames(
            aws_sdk_ec2::types::AttributeBooleanValue::builder()
                .value(true)
                .build(),
        )
        .send()
        .await;
    assert_eq!(denied(modify), "UnauthorizedOperation");

    // xrole's own VPC: changed and deleted.
    ec2.modify_vpc_attribute()
        .vpc_id(&ours)
        .enable_dns_hostnames(
            aws_sdk_ec2::types::AttributeBooleanValue::builder()
                .value(true)
                .build(),
        )
        .send()
        .await
        .unwrap();
    ec2.delete_vpc().vpc_id(&ours).send().await.unwrap();
    assert!(aws.gate().decision_count("ec2:DeleteVpc", Verdict::Allowed) >= 1);
}

#[tokio::test]
async fn provisioning_never_tags_changes_or_deletes_a_foreign_database() {
    let (aws, customer, _role, session) = stack(AccessLevel::Provisioning).await;
    let rds = rds(&session);
    let theirs = customer_database(&customer, "customer-prod").await;
    let tag = aws_sdk_rds::types::Tag::builder()
        .key("xrole:managed-by")
        .value("xrole")
        .build();
    let (code_, message) = error(
        rds.add_tags_to_resource()
            .resource_name(&theirs)
            .tags(tag.clone())
            .send()
            .await,
    );
    assert_eq!(code_, "AccessDenied");
    assert!(
        message.contains(&format!(
            "is not authorized to perform: rds:AddTagsToResource on resource: {theirs}"
        )),
        "{message}"
    );
    let modify = rds
        .modify_db_instance()
        .db_instance_identifier("customer-prod")
        .allocated_storage(100)
        .send()
        .await;
    assert_eq!(code(modify), "AccessDenied");
    let delete = rds
        .delete_db_instance()
        .db_instance_identifier("customer-prod")
        .skip_final_snapshot(true)
        .send()
        .await;
    assert_eq!(code(delete), "AccessDenied");
    let remaining = aws_sdk_rds::Client::new(&customer.admin_config())
        .describe_db_instances()
        .db_instance_identifier("customer-prod")
        .send()
        .await
        .unwrap();
    assert_eq!(remaining.db_instances().len(), 1);

    // A known limit, documented in the template: RDS has no "tag only while
    // creating" key, so only the name prefix guards databases. A customer
    // database named xrole-* can be given xrole's tag, and is then xrole's.
    let lookalike = customer_database(&customer, "xrole-lookalike").await;
    rds.add_tags_to_resource()
        .resource_name(&lookalike)
        .tags(tag)
        .send()
        .await
        .unwrap();
    assert!(
        aws.gate()
            .decision_count("rds:AddTagsToResource", Verdict::Denied)
            >= 1
    );
}

#[tokio::test]
async fn provisioning_may_lift_deletion_protection_but_never_take_the_password() {
    let (aws, customer, _role, session) = stack(AccessLevel::Provisioning).await;
    let tag = |k: &str, v: &str| aws_sdk_rds::types::Tag::builder().key(k).value(v).build();
    // A database as xrole makes them: tagged, protected, password managed by RDS.
    aws_sdk_rds::Client::new(&customer.admin_config())
        .create_db_instance()
        .db_instance_identifier("xrole-app-main-1")
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("xrole")
        .manage_master_user_password(true)
        .deletion_protection(true)
        .tags(tag("xrole:managed-by", "xrole"))
        .tags(tag("Name", "main"))
        .send()
        .await
        .unwrap();
    let rds = rds(&session);
    let (code_, message) = error(
        rds.modify_db_instance()
            .db_instance_identifier("xrole-app-main-1")
            .manage_master_user_password(false)
            .master_user_password("chosen-by-the-saas-0")
            .apply_immediately(true)
            .send()
            .await,
    );
    assert_eq!(code_, "AccessDenied");
    assert!(message.contains("explicit deny"), "{message}");
    rds.modify_db_instance()
        .db_instance_identifier("xrole-app-main-1")
        .deletion_protection(false)
        .apply_immediately(true)
        .send()
        .await
        .unwrap();
    assert!(
        aws.gate()
            .decision_count("rds:ModifyDBInstance", Verdict::Allowed)
            >= 1
    );
}
