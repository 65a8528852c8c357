//! Writes the entry points' seeds into `corpus/<target>/` (run from fuzz/ before fuzzing;
//! scripts/fuzz.sh does).
use std::fs;
use std::path::Path;

fn main() -> std::io::Result<()> {
    use knock_core::fuzz_entry::seeds as core;
    use knockd::fuzz_entry::seeds as server;
    let all: [(&str, Vec<Vec<u8>>); 9] = [
        ("packet_frame", core::packet_frame()),
        ("knockd_toml", core::knockd_toml()),
        ("knockd_conf", core::knockd_conf()),
        ("sequence_file", core::sequence_file()),
        ("profile", core::profile()),
        ("audit_chain", core::audit_chain()),
        ("ledger_replay", core::ledger_replay()),
        ("netlink_ack", server::netlink_ack()),
        ("nft_watch", server::nft_watch()),
    ];
    for (target, seeds) in all {
        let dir = Path::new("corpus").join(target);
        fs::create_dir_all(&dir)?;
        for (i, seed) in seeds.iter().enumerate() {
            fs::write(dir.join(format!("seed-{i}")), seed)?;
        }
    }
    Ok(())
}
