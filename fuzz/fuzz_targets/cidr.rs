//! `CidrBlock` and `Ipv4Cidr` `FromStr` on arbitrary text, plus
//! `CidrBlock::subnet` with arbitrary arguments: never panics; accepted
//! blocks print back to text that parses to the same block; subnets lie
//! inside their parent.
//!
//! The parser's source file is compiled in directly: depending on
//! xrole-provision would build the AWS SDK with sanitizers.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/xrole-provision/src/cidr.rs"]
mod cidr;

use cidr::{CidrBlock, Ipv4Cidr, MAX_PREFIX, MIN_PREFIX};

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    text: &'a str,
    prefix: u8,
    index: u32,
}

fuzz_target!(|i: Input<'_>| {
    if let Ok(c) = i.text.parse::<Ipv4Cidr>() {
        assert!(c.prefix() <= 32);
        let back: Ipv4Cidr = c.to_string().parse().unwrap();
        assert_eq!(back, c);
        assert!(c.contains(&c));
    }
    let Ok(block) = i.text.parse::<CidrBlock>() else {
        return;
    };
    assert!((MIN_PREFIX..=MAX_PREFIX).contains(&block.prefix()));
    let back: CidrBlock = block.to_string().parse().unwrap();
    assert_eq!(back, block);
    assert!(i.text.parse::<Ipv4Cidr>().is_ok());
    if let Some(sub) = block.subnet(i.prefix, i.index) {
        assert_eq!(sub.prefix(), i.prefix);
        assert!(block.as_ipv4().contains(&sub.as_ipv4()));
        let reparsed: CidrBlock = sub.to_string().parse().unwrap();
        assert_eq!(reparsed, sub);
        // Distinct indexes give distinct, non-overlapping subnets.
        if let Some(next) = block.subnet(i.prefix, i.index.wrapping_add(1)) {
            assert!(!sub.as_ipv4().contains(&next.as_ipv4()));
        }
    } else {
        assert!(
            i.prefix < block.prefix()
                || i.prefix > MAX_PREFIX
                || u64::from(i.index) >= 1u64 << (i.prefix - block.prefix())
        );
    }
});
