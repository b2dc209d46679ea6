//! The unit a connection and a rate limit count against. An IPv6 client is given a /64 by its
//! provider and can rotate through it at will, so the /64 is its source; an IPv4-mapped IPv6
//! address is the IPv4 address it maps.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    V4(Ipv4Addr),
    /// The first 64 bits of the address.
    V6Prefix64(u64),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Source::V4(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => Source::V6Prefix64((u128::from(a) >> 64) as u64),
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::V4(a) => a.fmt(f),
            Source::V6Prefix64(p) => write!(f, "{}/64", Ipv6Addr::from(u128::from(*p) << 64)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ipv6_is_keyed_by_its_64_and_mapped_ipv4_by_the_address() {
        let s = |a: &str| Source::from(a.parse::<IpAddr>().unwrap());
        assert_eq!(s("2001:db8:1:2::1"), s("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_ne!(s("2001:db8:1:2::1"), s("2001:db8:1:3::1"));
        assert_eq!(s("::ffff:10.0.2.2"), s("10.0.2.2"));
        assert_ne!(s("10.0.2.2"), s("10.0.2.3"));
        assert_eq!(s("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(s("127.0.0.1").to_string(), "127.0.0.1");
    }
}
