//! What a door does when a knock opens or closes it: a firewall grant (the [`crate::runtime::firewall`]
//! backends, remembered in [`grants`]) or knockd's start and stop shell commands ([`shell`]).

pub mod grants;
pub mod shell;
