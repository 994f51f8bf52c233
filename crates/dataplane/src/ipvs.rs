use neli::consts::socket::NlFamily;
use neli::err::RouterError;
use neli::router::synchronous::NlRouter;
use neli::utils::Groups;

use crate::error::{Error, Result};

/// The name the kernel registers the IPVS generic netlink family under.
pub const IPVS_GENL_NAME: &str = "IPVS";

/// A connection to the kernel's IPVS generic netlink family.
pub struct Ipvs {
    _router: NlRouter,
    family_id: u16,
}

impl std::fmt::Debug for Ipvs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipvs")
            .field("family_id", &self.family_id)
            .finish()
    }
}

impl Ipvs {
    /// Opens a generic netlink socket and resolves the `IPVS` family.
    pub fn connect() -> Result<Ipvs> {
        let op = "resolve the IPVS netlink family";
        let (router, _) =
            NlRouter::connect(NlFamily::Generic, None, Groups::empty()).map_err(|e| {
                Error::Netlink {
                    op,
                    detail: e.to_string(),
                }
            })?;
        let family_id = router
            .resolve_genl_family(IPVS_GENL_NAME)
            .map_err(|e| match e {
                // The controller answers ENOENT for a family nobody registered;
                // neli reports "not found" when the dump came back without it.
                RouterError::Nlmsgerr(ref m) if -*m.error() == libc_enoent() => {
                    Error::IpvsUnavailable
                }
                RouterError::Msg(ref m) if m.to_string().contains("not found") => {
                    Error::IpvsUnavailable
                }
                other => Error::Netlink {
                    op,
                    detail: other.to_string(),
                },
            })?;
        Ok(Ipvs {
            _router: router,
            family_id,
        })
    }

    /// The numeric id the kernel gave the IPVS family at module load.
    pub fn family_id(&self) -> u16 {
        self.family_id
    }
}

const fn libc_enoent() -> i32 {
    2
}
