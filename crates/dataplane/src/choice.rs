//! Which kernel facility balances the VIPs: the one definition of the
//! choice, shared by the configuration file, both command lines and the
//! chart's values.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The dataplane a node asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DataplaneChoice {
    /// IPVS where the kernel has it (its generic netlink family answers),
    /// nftables otherwise; the log says which and why.
    #[default]
    Auto,
    /// IPVS only: fail where the kernel has none.
    Ipvs,
    /// nftables only (one table of ours, `inet bcs-apiserver-proxy`).
    Nftables,
}

impl DataplaneChoice {
    pub const ALL: [DataplaneChoice; 3] = [
        DataplaneChoice::Auto,
        DataplaneChoice::Ipvs,
        DataplaneChoice::Nftables,
    ];

    /// How files and flags spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            DataplaneChoice::Auto => "auto",
            DataplaneChoice::Ipvs => "ipvs",
            DataplaneChoice::Nftables => "nftables",
        }
    }
}

impl fmt::Display for DataplaneChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dataplane that is none of the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dataplane {0:?}: use auto, ipvs or nftables")]
pub struct UnknownDataplane(pub String);

impl FromStr for DataplaneChoice {
    type Err = UnknownDataplane;

    fn from_str(s: &str) -> Result<DataplaneChoice, UnknownDataplane> {
        DataplaneChoice::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownDataplane(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn one_spelling_everywhere_and_unknown_values_are_errors() {
        for c in DataplaneChoice::ALL {
            assert_eq!(c.as_str().parse::<DataplaneChoice>(), Ok(c));
            let flag = c.to_possible_value().expect("a value");
            assert_eq!(flag.get_name(), c.as_str());
            let json = serde_json::to_string(&c).expect("serializes");
            assert_eq!(json, format!("\"{c}\""));
        }
        let err = "iptables".parse::<DataplaneChoice>().expect_err("unknown");
        assert!(err.to_string().contains("auto, ipvs or nftables"), "{err}");
    }
}
