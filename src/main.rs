//! `convnet`: the command line over the convnet-wgpu library (see src/cli/).

mod cli;

use std::process::ExitCode;

use clap::Parser;
use convnet_wgpu::distributed::World;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = cli::Cli::parse();
    // Under an MPI launcher every rank runs this program; rank 0 speaks for them.
    let world = match World::from_environment() {
        Ok(world) => world,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if world.rank() > 0 {
        silence_stdout();
    }
    match cli::run(cli.command, &world) {
        Ok(code) => code,
        Err(e) if world.size() > 1 => {
            // The other ranks may be waiting for this one in a collective: end them all.
            eprintln!("error: rank {}: {e:#}", world.rank());
            world.abort(1);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sends this process's standard output to /dev/null (the other ranks of an MPI run print
/// nothing but their errors, which go to standard error).
#[cfg(all(feature = "mpi", unix))]
fn silence_stdout() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let _ = std::io::stdout().flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: both descriptors are open; dup2 replaces descriptor 1 atomically, and Rust's
        // stdout writes to descriptor 1 whatever file it names.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

#[cfg(not(all(feature = "mpi", unix)))]
fn silence_stdout() {}
