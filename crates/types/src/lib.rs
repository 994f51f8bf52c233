//! Types every crate of bcs-apiserver-proxy agrees on.
//!
//! Kept deliberately small: an [`Endpoint`] (an `IP:PORT` that parses with
//! errors a person can act on), the address [`Family`], the binaries'
//! [`outln!`], and [`file::write_atomic`], the one way every crate writes a
//! file on the node. Anything richer belongs to the crate that owns the
//! concept.

pub mod file;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// `println!` for the binaries' reports, minus the panic when stdout is a
/// pipe that closed early (`apiserver-proxy-tools init | head -1`): a panic
/// there would stop the tool midway through changing the node, and a report
/// line nobody can read is not worth that.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` without the panic on a closed stdout; see [`outln!`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The address family of an endpoint or virtual server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        })
    }
}

/// An `IP:PORT` pair: a virtual server, or one apiserver behind it.
///
/// IPv6 is written `[addr]:port`, as in URLs, so that the port can never be
/// mistaken for the last group of the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint(pub SocketAddr);

impl Endpoint {
    pub fn new(ip: IpAddr, port: u16) -> Endpoint {
        Endpoint(SocketAddr::new(ip, port))
    }
    pub fn ip(&self) -> IpAddr {
        self.0.ip()
    }
    pub fn port(&self) -> u16 {
        self.0.port()
    }
    pub fn family(&self) -> Family {
        Family::of(&self.0.ip())
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Endpoint(addr)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SocketAddr already prints IPv6 as [addr]:port.
        fmt::Display::fmt(&self.0, f)
    }
}

/// Why a string is not an `IP:PORT`. Each message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("{0:?} is empty: write IP:PORT, for example 10.103.97.2:6443 or [fd00::2]:6443")]
    Empty(String),
    #[error("{0:?} has no port: write IP:PORT, for example {0}:6443")]
    MissingPort(String),
    #[error(
        "{0:?} looks like an IPv6 address without brackets: write [ADDR]:PORT, for example [fd00::2]:6443"
    )]
    UnbracketedIpv6(String),
    #[error("{input:?}: {port:?} is not a port: use a number from 1 to 65535")]
    BadPort { input: String, port: String },
    #[error("{input:?}: {host:?} is not an IP address (host names are not accepted here)")]
    BadAddress { input: String, host: String },
    #[error("{0:?}: port 0 cannot be used: use a number from 1 to 65535")]
    ZeroPort(String),
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let input = s.trim();
        if input.is_empty() {
            return Err(EndpointError::Empty(s.to_string()));
        }
        let (host, port) = if let Some(rest) = input.strip_prefix('[') {
            let Some((host, after)) = rest.split_once(']') else {
                return Err(EndpointError::BadAddress {
                    input: input.to_string(),
                    host: rest.to_string(),
                });
            };
            match after.strip_prefix(':') {
                Some(port) => (host, port),
                None if after.is_empty() => {
                    return Err(EndpointError::MissingPort(input.to_string()));
                }
                None => {
                    return Err(EndpointError::BadAddress {
                        input: input.to_string(),
                        host: input.to_string(),
                    });
                }
            }
        } else {
            match input.matches(':').count() {
                0 => return Err(EndpointError::MissingPort(input.to_string())),
                1 => input.split_once(':').unwrap_or((input, "")),
                _ => return Err(EndpointError::UnbracketedIpv6(input.to_string())),
            }
        };
        let ip: IpAddr = if input.starts_with('[') {
            host.parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| EndpointError::BadAddress {
                    input: input.to_string(),
                    host: host.to_string(),
                })?
        } else {
            host.parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| EndpointError::BadAddress {
                    input: input.to_string(),
                    host: host.to_string(),
                })?
        };
        let port: u16 = port.parse().map_err(|_| EndpointError::BadPort {
            input: input.to_string(),
            port: port.to_string(),
        })?;
        if port == 0 {
            return Err(EndpointError::ZeroPort(input.to_string()));
        }
        Ok(Endpoint(SocketAddr::new(ip, port)))
    }
}

impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Endpoint {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_ipv4_and_bracketed_ipv6() {
        assert_eq!(ok("10.103.97.2:6443").to_string(), "10.103.97.2:6443");
        assert_eq!(ok(" [fd00::2]:6443 ").to_string(), "[fd00::2]:6443");
        assert_eq!(ok("[fd00::2]:6443").family(), Family::Ipv6);
        assert_eq!(ok("192.168.1.10:443").family(), Family::Ipv4);
    }

    #[test]
    fn every_bad_input_names_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("", "is empty"),
            ("10.0.0.1", "has no port"),
            ("[fd00::1]", "has no port"),
            ("fd00::1:6443", "without brackets"),
            ("10.0.0.1:http", "is not a port"),
            ("10.0.0.1:70000", "is not a port"),
            ("10.0.0.1:0", "port 0"),
            ("master-1:6443", "is not an IP address"),
            ("[10.0.0.1]:6443", "is not an IP address"),
            ("[fd00::1:6443", "is not an IP address"),
        ];
        for (input, want) in cases {
            let err = input.parse::<Endpoint>().expect_err(input).to_string();
            assert!(
                err.contains(want),
                "{input:?}: {err:?} should contain {want:?}"
            );
        }
    }

    #[test]
    fn serde_uses_the_text_form() {
        let e = ok("[fd00::2]:6443");
        let json = serde_json::to_string(&e).unwrap_or_default();
        assert_eq!(json, "\"[fd00::2]:6443\"");
        let back: Endpoint = serde_json::from_str(&json).unwrap_or(ok("1.1.1.1:1"));
        assert_eq!(back, e);
        assert!(serde_json::from_str::<Endpoint>("\"10.0.0.1\"").is_err());
    }
}
