//! knock-lab: the port knocker's lab tool. Replays captured knocks, sends
//! crafted knock sequences and runs bounded spoofed-source floods, only ever
//! between addresses of 198.18.0.0/15, 2001:db8::/32 or loopback; writes
//! generated captures for `knockd replay`.

mod addr;
mod batch;
mod cli;
mod flood;
mod frame;
mod grants;
mod inject;
mod limits;
mod pcapgen;
mod replay;
mod send;
mod tcp;
mod template;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Replay(a) => replay::run(a),
        Command::Send(a) => send::run(a),
        Command::Flood(a) => flood::run(a),
        Command::Serve(a) => tcp::serve(a),
        Command::Probe(a) => tcp::probe(a),
        Command::Grants(a) => grants::run(a),
        Command::Pcap(a) => pcapgen::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("knock-lab: error: {e}");
            ExitCode::FAILURE
        }
    }
}
