//! `nacre witness`: the transparency log's independent witness (init, key, serve). Run it under
//! another operator than the attestation service: its worth is that the log's owner cannot make
//! it cosign a fork or a rollback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::Subcommand;
use nacre_witness::Config;

#[derive(Subcommand, Debug)]
pub enum WitnessCmd {
    /// Create a witness directory: its key (0600), a private CA and TLS certificate, and
    /// witness.toml following the logs named by --log.
    Init {
        dir: PathBuf,
        /// The witness's name (its key's name in cosignatures), e.g. witness.example.org/w1.
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "127.0.0.1:8444")]
        listen: SocketAddr,
        /// Extra names for the TLS certificate (IP addresses or DNS names).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// A log to follow: its checkpoint verifier key (`GET /v1/log/key`, checked out of
        /// band). Repeatable.
        #[arg(long = "log", required = true)]
        logs: Vec<String>,
    },
    /// Print the witness's verifier key (what logs and clients configure).
    Key {
        #[arg(long, default_value = "witness.toml")]
        config: PathBuf,
    },
    /// Print what the witness last cosigned for each log it follows.
    Status {
        #[arg(long, default_value = "witness.toml")]
        config: PathBuf,
    },
    /// Serve the C2SP tlog-witness API over HTTPS until SIGINT/SIGTERM.
    Serve {
        #[arg(long, default_value = "witness.toml")]
        config: PathBuf,
    },
}

pub fn witness(cmd: WitnessCmd) -> Result<ExitCode> {
    match cmd {
        WitnessCmd::Init { dir, name, listen, sans, logs } => {
            let out =
                nacre_witness::setup::init(&dir, &name, listen, &sans, &logs).map_err(anyhow::Error::msg)?;
            println!(
                "config: {}\nCA (the log's service pins it): {}\nwitness key (logs and clients name it):\n{}",
                out.config.display(),
                out.ca_cert.display(),
                out.vkey
            );
        }
        WitnessCmd::Key { config } => {
            let config = Config::load(&config).map_err(anyhow::Error::msg)?;
            println!("{}", config.signer().map_err(anyhow::Error::msg)?.public().vkey());
        }
        WitnessCmd::Status { config } => {
            let config = Config::load(&config).map_err(anyhow::Error::msg)?;
            let witness = nacre_witness::server::open(&config).map_err(anyhow::Error::msg)?;
            for log in config.log_keys().map_err(anyhow::Error::msg)? {
                match witness.latest(log.name()) {
                    Some(c) => {
                        println!("{}\tsize {}\troot {}\tcosigned at {}", log.name(), c.size, c.root, c.time)
                    }
                    None => println!("{}\tnothing cosigned yet", log.name()),
                }
            }
        }
        WitnessCmd::Serve { config } => {
            let config = Config::load(&config).map_err(anyhow::Error::msg)?;
            let witness = Arc::new(nacre_witness::server::open(&config).map_err(anyhow::Error::msg)?);
            crate::attestation::runtime()?.block_on(async {
                let listener = tokio::net::TcpListener::bind(config.listen).await?;
                eprintln!("nacre witness {} on https://{}", witness.key().name(), listener.local_addr()?);
                nacre_witness::server::serve(
                    witness,
                    &config,
                    listener,
                    crate::attestation::shutdown_signal(),
                )
                .await
                .map_err(anyhow::Error::msg)
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
