//! A plan as a dependency graph of steps, for creating and for tearing down.

use crate::journal::StepKey;
use crate::plan::{IngressSource, SubnetTier, ValidPlan};

/// What a step does. Indexes point into the plan's vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Vpc,
    DnsSupport,
    DnsHostnames,
    Subnet { tier: SubnetTier, zone: usize },
    InternetGateway,
    AttachGateway,
    RouteTable,
    DefaultRoute,
    Associate { zone: usize },
    SecurityGroup { group: usize },
    Ingress { group: usize },
    Image { instance: usize },
    Instance { instance: usize, n: u32 },
    InstanceRunning { instance: usize, n: u32 },
    DbSubnetGroup { db: usize },
    Database { db: usize },
    DatabaseAvailable { db: usize },
}

impl Op {
    /// Whether the step creates something that teardown must remove.
    pub(crate) fn has_teardown(self) -> bool {
        matches!(
            self,
            Op::Vpc
                | Op::Subnet { .. }
                | Op::InternetGateway
                | Op::AttachGateway
                | Op::RouteTable
                | Op::Associate { .. }
                | Op::SecurityGroup { .. }
                | Op::Instance { .. }
                | Op::DbSubnetGroup { .. }
                | Op::Database { .. }
        )
    }
}

/// One node of the graph.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub key: StepKey,
    pub op: Op,
    pub deps: Vec<StepKey>,
}

pub(crate) mod key {
    use super::*;

    pub fn vpc() -> StepKey {
        StepKey::from_parts(&["vpc"])
    }
    pub fn dns_support() -> StepKey {
        StepKey::from_parts(&["vpc", "dns-support"])
    }
    pub fn dns_hostnames() -> StepKey {
        StepKey::from_parts(&["vpc", "dns-hostnames"])
    }
    pub fn subnet(tier: SubnetTier, zone: usize) -> StepKey {
        StepKey::from_parts(&["subnet", tier.as_str(), &zone.to_string()])
    }
    pub fn igw() -> StepKey {
        StepKey::from_parts(&["igw"])
    }
    pub fn igw_attach() -> StepKey {
        StepKey::from_parts(&["igw", "attach"])
    }
    pub fn route_table() -> StepKey {
        StepKey::from_parts(&["rtb", "public"])
    }
    pub fn default_route() -> StepKey {
        StepKey::from_parts(&["rtb", "public", "default-route"])
    }
    pub fn associate(zone: usize) -> StepKey {
        StepKey::from_parts(&["rtb", "public", "assoc", &zone.to_string()])
    }
    pub fn sg(name: &str) -> StepKey {
        StepKey::from_parts(&["sg", name])
    }
    pub fn ingress(name: &str) -> StepKey {
        StepKey::from_parts(&["sg", name, "ingress"])
    }
    pub fn image(name: &str) -> StepKey {
        StepKey::from_parts(&["ami", name])
    }
    pub fn instance(name: &str, n: u32) -> StepKey {
        StepKey::from_parts(&["instance", name, &n.to_string()])
    }
    pub fn instance_running(name: &str, n: u32) -> StepKey {
        StepKey::from_parts(&["instance", name, &n.to_string(), "running"])
    }
    pub fn db_subnet_group(name: &str) -> StepKey {
        StepKey::from_parts(&["db-subnet-group", name])
    }
    pub fn database(name: &str) -> StepKey {
        StepKey::from_parts(&["db", name])
    }
    pub fn database_available(name: &str) -> StepKey {
        StepKey::from_parts(&["db", name, "available"])
    }
}

impl ValidPlan {
    /// The keys of the steps [`Executor::apply`](crate::Executor::apply) runs,
    /// dependencies first (for progress displays and tests).
    pub fn create_step_keys(&self) -> Vec<StepKey> {
        create_steps(self).into_iter().map(|s| s.key).collect()
    }

    /// The keys of the steps [`Executor::teardown`](crate::Executor::teardown) runs.
    pub fn teardown_step_keys(&self) -> Vec<StepKey> {
        teardown_steps(self).into_iter().map(|s| s.key).collect()
    }
}

/// The create graph, in a topological order (dependencies first).
pub(crate) fn create_steps(plan: &ValidPlan) -> Vec<Step> {
    let p = plan.plan();
    let zones = p.vpc.availability_zones.len();
    let mut steps = Vec::new();
    let mut add = |key: StepKey, op: Op, deps: Vec<StepKey>| steps.push(Step { key, op, deps });

    add(key::vpc(), Op::Vpc, vec![]);
    add(key::dns_support(), Op::DnsSupport, vec![key::vpc()]);
    add(key::dns_hostnames(), Op::DnsHostnames, vec![key::vpc()]);
    for tier in [SubnetTier::Public, SubnetTier::Private] {
        for zone in 0..zones {
            add(
                key::subnet(tier, zone),
                Op::Subnet { tier, zone },
                vec![key::vpc()],
            );
        }
    }
    add(key::igw(), Op::InternetGateway, vec![]);
    add(
        key::igw_attach(),
        Op::AttachGateway,
        vec![key::igw(), key::vpc()],
    );
    add(key::route_table(), Op::RouteTable, vec![key::vpc()]);
    add(
        key::default_route(),
        Op::DefaultRoute,
        vec![key::route_table(), key::igw_attach()],
    );
    for zone in 0..zones {
        add(
            key::associate(zone),
            Op::Associate { zone },
            vec![key::route_table(), key::subnet(SubnetTier::Public, zone)],
        );
    }
    for (group, sg) in p.vpc.security_groups.iter().enumerate() {
        add(
            key::sg(&sg.name),
            Op::SecurityGroup { group },
            vec![key::vpc()],
        );
    }
    for (group, sg) in p.vpc.security_groups.iter().enumerate() {
        if sg.ingress.is_empty() {
            continue;
        }
        let mut deps = vec![key::sg(&sg.name)];
        for rule in &sg.ingress {
            if let IngressSource::SecurityGroup(other) = &rule.source
                && !deps.contains(&key::sg(other))
            {
                deps.push(key::sg(other));
            }
        }
        add(key::ingress(&sg.name), Op::Ingress { group }, deps);
    }
    for (instance, inst) in p.instances.iter().enumerate() {
        add(key::image(&inst.name), Op::Image { instance }, vec![]);
        for n in 0..inst.count {
            let zone = n as usize % zones;
            let mut deps = vec![
                key::image(&inst.name),
                key::subnet(inst.subnet_tier, zone),
                key::dns_support(),
                key::dns_hostnames(),
            ];
            deps.extend(inst.security_groups.iter().map(|g| key::sg(g)));
            if inst.subnet_tier == SubnetTier::Public {
                // Boot scripts expect the internet to be reachable.
                deps.push(key::default_route());
                deps.push(key::associate(zone));
            }
            add(
                key::instance(&inst.name, n),
                Op::Instance { instance, n },
                deps,
            );
            add(
                key::instance_running(&inst.name, n),
                Op::InstanceRunning { instance, n },
                vec![key::instance(&inst.name, n)],
            );
        }
    }
    for (db, d) in p.databases.iter().enumerate() {
        let subnets = (0..zones)
            .map(|z| key::subnet(SubnetTier::Private, z))
            .collect();
        add(
            key::db_subnet_group(&d.name),
            Op::DbSubnetGroup { db },
            subnets,
        );
        let mut deps = vec![
            key::db_subnet_group(&d.name),
            key::dns_support(),
            key::dns_hostnames(),
        ];
        deps.extend(d.security_groups.iter().map(|g| key::sg(g)));
        add(key::database(&d.name), Op::Database { db }, deps);
        add(
            key::database_available(&d.name),
            Op::DatabaseAvailable { db },
            vec![key::database(&d.name)],
        );
    }
    steps
}

/// The teardown graph: one step per created resource, keyed
/// `teardown/<create key>`, with dependencies reversed (a resource goes only
/// after everything inside or attached to it).
pub(crate) fn teardown_steps(plan: &ValidPlan) -> Vec<Step> {
    let p = plan.plan();
    let zones = p.vpc.availability_zones.len();
    let creates = create_steps(plan);
    let instances: Vec<StepKey> = creates
        .iter()
        .filter(|s| matches!(s.op, Op::Instance { .. }))
        .map(|s| s.key.teardown())
        .collect();
    let dbs: Vec<StepKey> = p
        .databases
        .iter()
        .map(|d| key::database(&d.name).teardown())
        .collect();
    let db_groups: Vec<StepKey> = p
        .databases
        .iter()
        .map(|d| key::db_subnet_group(&d.name).teardown())
        .collect();
    let compute: Vec<StepKey> = instances.iter().chain(&dbs).cloned().collect();

    let mut steps = Vec::new();
    for s in creates.iter().filter(|s| s.op.has_teardown()) {
        let deps: Vec<StepKey> = match s.op {
            Op::Instance { .. } | Op::Database { .. } => vec![],
            Op::DbSubnetGroup { db } => vec![key::database(&p.databases[db].name).teardown()],
            Op::Associate { .. } => vec![],
            Op::RouteTable => (0..zones).map(|z| key::associate(z).teardown()).collect(),
            // Instances with public addresses keep the gateway attached.
            Op::AttachGateway => instances.clone(),
            Op::InternetGateway => vec![key::igw_attach().teardown()],
            Op::SecurityGroup { group } => {
                let name = &p.vpc.security_groups[group].name;
                let mut deps = compute.clone();
                // Groups whose rules name this one go first.
                for other in &p.vpc.security_groups {
                    let refers = other
                        .ingress
                        .iter()
                        .any(|r| matches!(&r.source, IngressSource::SecurityGroup(g) if g == name));
                    if refers && &other.name != name {
                        deps.push(key::sg(&other.name).teardown());
                    }
                }
                deps
            }
            Op::Subnet { tier, zone } => {
                let mut deps = compute.clone();
                deps.extend(db_groups.iter().cloned());
                if tier == SubnetTier::Public {
                    deps.push(key::associate(zone).teardown());
                }
                deps
            }
            Op::Vpc => creates
                .iter()
                .filter(|c| c.op.has_teardown() && c.op != Op::Vpc && c.op != Op::InternetGateway)
                .map(|c| c.key.teardown())
                .collect(),
            _ => vec![],
        };
        steps.push(Step {
            key: s.key.teardown(),
            op: s.op,
            deps,
        });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::EnvironmentPlan;
    use std::collections::HashSet;

    fn plan() -> ValidPlan {
        let p: EnvironmentPlan = serde_json::from_value(serde_json::json!({
            "name": "demo",
            "vpc": {"cidr": "10.0.0.0/16", "availability_zones": ["us-east-1a", "us-east-1b"],
                    "security_groups": [
                        {"name": "app", "description": "app", "ingress": [
                            {"protocol": "tcp", "from_port": 22, "to_port": 22, "source": {"cidr": "10.0.0.0/8"}}]},
                        {"name": "db", "description": "db", "ingress": [
                            {"protocol": "tcp", "from_port": 5432, "to_port": 5432, "source": {"security_group": "app"}}]}]},
            "instances": [{"name": "web", "ami": {"id": "ami-12c6146b"}, "instance_type": "t3.micro",
                           "subnet_tier": "public", "security_groups": ["app"], "count": 2}],
            "databases": [{"name": "main", "engine": "postgres", "engine_version": "16.4",
                           "instance_class": "db.t3.micro", "allocated_storage_gib": 20,
                           "security_groups": ["db"], "master_username": "xrole"}]
        }))
        .unwrap();
        p.validate().unwrap()
    }

    fn assert_topological(steps: &[Step]) {
        let mut seen = HashSet::new();
        for s in steps {
            for d in &s.deps {
                assert!(
                    seen.contains(d),
                    "{} depends on {d}, which comes later or is missing",
                    s.key
                );
            }
            assert!(seen.insert(s.key.clone()), "{} twice", s.key);
        }
    }

    #[test]
    fn create_graph_is_ordered_and_keys_are_unique() {
        let steps = create_steps(&plan());
        assert_topological(&steps);
        assert_eq!(steps.len(), 1 + 2 + 4 + 2 + 2 + 2 + 2 + 2 + 1 + 2 * 2 + 3);
    }

    #[test]
    fn teardown_graph_reverses_dependencies() {
        let p = plan();
        let steps = teardown_steps(&p);
        let by_key: std::collections::HashMap<_, _> =
            steps.iter().map(|s| (s.key.as_str(), s)).collect();
        let deps = |k: &str| {
            by_key[k]
                .deps
                .iter()
                .map(|d| d.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        assert!(deps("teardown/vpc").contains(&"teardown/subnet/private/1".to_owned()));
        assert!(deps("teardown/sg/app").contains(&"teardown/sg/db".to_owned()));
        assert!(!deps("teardown/sg/db").contains(&"teardown/sg/app".to_owned()));
        assert!(deps("teardown/db-subnet-group/main").contains(&"teardown/db/main".to_owned()));
        assert!(deps("teardown/igw/attach").contains(&"teardown/instance/web/1".to_owned()));
        // Every dependency is itself a teardown step, and the graph has no cycle.
        let mut done = HashSet::new();
        while done.len() < steps.len() {
            let before = done.len();
            for s in &steps {
                if s.deps.iter().all(|d| done.contains(d)) {
                    done.insert(s.key.clone());
                }
            }
            assert!(done.len() > before, "teardown graph is stuck");
        }
    }
}
