//! Syncing verified users into the store: the synced-user cache, the [`Syncer`] that upserts
//! on a miss (and enriches from the Backend API), its options, and the invalidation listener.

pub(crate) mod budget;
mod evidence;
pub(crate) mod listener;
mod options;
mod orgs;
mod profile;
mod syncer;
mod users;

pub(crate) use evidence::Evidence;
pub(crate) use options::SyncOptions;
pub use options::{FailurePolicy, ProfileSource};
pub(crate) use orgs::{OrgStanding, OrgSync};
pub use profile::ProfileClaims;
pub(crate) use syncer::Syncer;
pub(crate) use users::SyncedUser;
#[cfg(test)]
pub(crate) use users::test_user;
