//! IPv4 CIDR blocks: a VPC-valid [`CidrBlock`] and a general [`Ipv4Cidr`] for rules.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Any IPv4 network in CIDR notation with its host bits zero (`0.0.0.0/0`,
/// `203.0.113.0/24`), as used for security group rule sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length, 0 to 32.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        }
    }

    /// Whether `other` lies entirely inside `self`.
    pub fn contains(&self, other: &Ipv4Cidr) -> bool {
        other.prefix >= self.prefix
            && u32::from(other.addr) & Self::mask(self.prefix) == u32::from(self.addr)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not in CIDR notation (a.b.c.d/n)"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("`{prefix}` is not a prefix length between 0 and 32"))?;
        if u32::from(addr) & !Self::mask(prefix) != 0 {
            return Err(format!(
                "`{s}` has host bits set (the network is {})",
                Ipv4Cidr {
                    addr: Ipv4Addr::from(u32::from(addr) & Self::mask(prefix)),
                    prefix
                }
            ));
        }
        Ok(Ipv4Cidr { addr, prefix })
    }
}

impl TryFrom<String> for Ipv4Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Ipv4Cidr> for String {
    fn from(c: Ipv4Cidr) -> String {
        c.to_string()
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A VPC CIDR block: a private (RFC 1918) IPv4 network from /16 to /28, the
/// sizes AWS accepts for a VPC.
///
/// ```
/// use xrole_provision::CidrBlock;
/// let vpc: CidrBlock = "10.20.0.0/16".parse().unwrap();
/// assert_eq!(vpc.subnet(20, 1).unwrap().to_string(), "10.20.16.0/20");
/// assert!("8.8.8.0/24".parse::<CidrBlock>().is_err()); // public
/// assert!("10.0.0.0/8".parse::<CidrBlock>().is_err()); // larger than /16
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CidrBlock(Ipv4Cidr);

/// The smallest and largest VPC and subnet prefix lengths AWS accepts.
pub const MIN_PREFIX: u8 = 16;
/// See [`MIN_PREFIX`].
pub const MAX_PREFIX: u8 = 28;

const RFC1918: [(Ipv4Addr, u8); 3] = [
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
];

impl CidrBlock {
    /// The prefix length, 16 to 28.
    pub fn prefix(&self) -> u8 {
        self.0.prefix
    }

    /// The block as a general [`Ipv4Cidr`].
    pub fn as_ipv4(&self) -> Ipv4Cidr {
        self.0
    }

    /// The `index`-th block of length `prefix` inside this one, or `None` if
    /// `prefix` is outside this block's length..=28 or `index` does not fit.
    pub fn subnet(&self, prefix: u8, index: u32) -> Option<CidrBlock> {
        if prefix < self.0.prefix || prefix > MAX_PREFIX {
            return None;
        }
        let bits = u32::from(prefix - self.0.prefix);
        if bits < 32 && index >= (1u32 << bits) {
            return None;
        }
        let size = 1u32 << (32 - u32::from(prefix));
        let addr = u32::from(self.0.addr).checked_add(index.checked_mul(size)?)?;
        Some(CidrBlock(Ipv4Cidr {
            addr: Ipv4Addr::from(addr),
            prefix,
        }))
    }
}

impl FromStr for CidrBlock {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let c: Ipv4Cidr = s.parse()?;
        if !(MIN_PREFIX..=MAX_PREFIX).contains(&c.prefix) {
            return Err(format!(
                "`{s}`: a VPC block must be between /{MIN_PREFIX} and /{MAX_PREFIX}"
            ));
        }
        let private = RFC1918.iter().any(|(a, p)| {
            Ipv4Cidr {
                addr: *a,
                prefix: *p,
            }
            .contains(&c)
        });
        if !private {
            return Err(format!(
                "`{s}` is not a private (RFC 1918) range: use 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"
            ));
        }
        Ok(CidrBlock(c))
    }
}

impl TryFrom<String> for CidrBlock {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<CidrBlock> for String {
    fn from(c: CidrBlock) -> String {
        c.to_string()
    }
}

impl fmt::Display for CidrBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_private_ranges_of_vpc_size() {
        for ok in [
            "10.0.0.0/16",
            "172.31.0.0/16",
            "192.168.1.0/24",
            "10.1.2.16/28",
        ] {
            assert!(ok.parse::<CidrBlock>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_public_oversized_undersized_and_malformed() {
        for bad in [
            "11.0.0.0/16",
            "172.32.0.0/16",
            "192.169.0.0/16",
            "10.0.0.0/15",
            "10.0.0.0/29",
            "10.0.0.1/16",
            "10.0.0.0",
            "10.0.0/16",
            "10.0.0.0/33",
        ] {
            assert!(bad.parse::<CidrBlock>().is_err(), "{bad}");
        }
    }

    #[test]
    fn carves_subnets_in_order_and_stops_at_the_edge() {
        let vpc: CidrBlock = "10.0.0.0/16".parse().unwrap();
        assert_eq!(vpc.subnet(18, 0).unwrap().to_string(), "10.0.0.0/18");
        assert_eq!(vpc.subnet(18, 3).unwrap().to_string(), "10.0.192.0/18");
        assert!(vpc.subnet(18, 4).is_none());
        assert!(vpc.subnet(15, 0).is_none());
        assert!(vpc.subnet(29, 0).is_none());
        let small: CidrBlock = "192.168.0.0/28".parse().unwrap();
        assert_eq!(small.subnet(28, 0), Some(small));
    }

    #[test]
    fn general_cidr_accepts_anything_well_formed() {
        assert_eq!("0.0.0.0/0".parse::<Ipv4Cidr>().unwrap().prefix(), 0);
        assert!("203.0.113.7/32".parse::<Ipv4Cidr>().is_ok());
        assert!("203.0.113.7/24".parse::<Ipv4Cidr>().is_err());
    }
}
