//! How a node makes its VIP reachable: the one definition of the VIP mode,
//! shared by the configuration file, both command lines and the state file.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How the VIP is made reachable from the node itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum VipMode {
    /// A /32 or /128 on the dummy interface. For worker nodes.
    #[default]
    Address,
    /// Only a route `VIP/32 dev lo src NODE_IP` (IPv4): for control-plane
    /// nodes, where the node is one of its own backends.
    Route,
}

impl VipMode {
    pub const ALL: [VipMode; 2] = [VipMode::Address, VipMode::Route];

    /// How files and flags spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            VipMode::Address => "address",
            VipMode::Route => "route",
        }
    }
}

impl fmt::Display for VipMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A VIP mode that is none of the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown VIP mode {0:?}: use address or route")]
pub struct UnknownVipMode(pub String);

impl FromStr for VipMode {
    type Err = UnknownVipMode;

    fn from_str(s: &str) -> Result<VipMode, UnknownVipMode> {
        VipMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownVipMode(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_everywhere_and_unknown_values_are_errors() {
        for m in VipMode::ALL {
            assert_eq!(m.as_str().parse::<VipMode>(), Ok(m));
            let json = serde_json::to_string(&m).expect("serialize");
            assert_eq!(json, format!("\"{m}\""));
            assert_eq!(serde_json::from_str::<VipMode>(&json).expect("parse"), m);
        }
        let err = "bogus".parse::<VipMode>().expect_err("unknown");
        assert!(err.to_string().contains("address or route"), "{err}");
        assert!(serde_json::from_str::<VipMode>("\"bogus\"").is_err());
    }
}
