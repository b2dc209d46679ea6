//! `nacre`: the command-line tool. Exit codes: 0 accept / success, 1 reject, 2 usage or I/O error.
#![forbid(unsafe_code)]

mod attestation;
mod client;
mod doctor;
mod evidence;
mod guard;
mod host;
mod image;
mod log_monitor;
mod monitor;
mod monitor_eval;
mod seal;
mod sim;
mod witness;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "nacre",
    version,
    about = "Nacre: attested confidential inference — evidence verification and tools"
)]
struct Cli {
    /// Log as JSON lines on stderr (one object per event, with timestamps).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Verify or inspect attestation evidence.
    #[command(subcommand)]
    Evidence(EvidenceCmd),
    /// The simulated TEE (INSECURE: for development and tests).
    #[command(subcommand)]
    Sim(SimCmd),
    /// Seal an ONNX model under a new data key (the model owner's tool).
    Seal(seal::SealArgs),
    /// Decrypt and verify a sealed model (the model owner's check tool).
    Unseal(seal::UnsealArgs),
    /// The attestation service: init, serve, keys, policies.
    #[command(subcommand)]
    Attestation(attestation::AttestationCmd),
    /// The transparency log's independent witness: init, key, status, serve.
    #[command(subcommand)]
    Witness(witness::WitnessCmd),
    /// Export or verify the attestation service's audit log.
    #[command(subcommand)]
    Audit(attestation::AuditCmd),
    /// Model utilities.
    #[command(subcommand)]
    Model(ModelCmd),
    /// The posture of this host and its attestation service: TEE capability, insecure options
    /// in force, pins, reachability. Exit 1 when anything is unsafe.
    Doctor(doctor::DoctorArgs),
    /// The model guard's manifest: fit it to training data, check it against its model.
    #[command(subcommand)]
    Guard(guard::GuardCmd),
    /// Expected launch measurements computed from the boot inputs.
    #[command(subcommand)]
    Measure(image::MeasureCmd),
    /// Build reproducible guest images and their signed reference values.
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// The host agent: launch and supervise confidential VMs under QEMU.
    #[command(subcommand)]
    Host(host::HostCmd),
    /// Verify an enclave's attestation (certificate evidence, then a fresh channel-bound one),
    /// claim by claim: exit 0 accept, 1 refuse.
    Verify(client::VerifyArgs),
    /// Verify an enclave, then send it one KServe v2 inference request and print the outputs.
    Infer(client::InferArgs),
    /// Verify an enclave, then ask it for KernelSHAP attributions of one row (a KServe v2
    /// request), computed inside the enclave when the model's guard manifest offers them.
    Explain(client::InferArgs),
    /// Verify an enclave, then fetch its private monitor's released (noised) windows with a
    /// monitoring token: drift per feature over time as a table, and an SVG heat map.
    Monitor(monitor::MonitorArgs),
    /// Verify an enclave, then forward local HTTP and gRPC clients to it over the verified
    /// connection (loopback only; every reconnect verified again).
    Proxy(client::ProxyArgs),
}

#[derive(Subcommand, Debug)]
enum ModelCmd {
    /// Write the built-in sample ONNX model (a small MLP, f32[1,4] -> f32[1,2]) for demos.
    Sample {
        #[arg(long)]
        out: PathBuf,
    },
    /// The model identity of a plaintext model file, as sealing computes it and clients pin it
    /// (docs/sealed-format.md), on every core.
    Digest(seal::DigestArgs),
}

#[derive(Subcommand, Debug)]
enum EvidenceCmd {
    /// Verify evidence and appraise it against a policy: exit 0 accept, 1 reject.
    Verify(VerifyArgs),
    /// Print the fields of a report or quote WITHOUT verifying it.
    Show {
        #[arg(long, value_enum)]
        tee: TeeArg,
        file: PathBuf,
        /// TDX: the TD's event log (the CCEL log area, padding allowed): lists its events and
        /// says which RTMR its replay gives and whether that is the quote's.
        #[arg(long)]
        event_log: Option<PathBuf>,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum TeeArg {
    Snp,
    Tdx,
    Sim,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    #[arg(long, value_enum)]
    tee: TeeArg,
    /// The report (SNP/sim, 1184 bytes) or quote (TDX).
    #[arg(long)]
    evidence: PathBuf,
    /// Certificates and CRLs, PEM or DER, any order (SNP/sim): roles are recognised from content.
    #[arg(long, num_args = 1..)]
    certs: Vec<PathBuf>,
    /// QuoteCollateralV3 JSON (TDX).
    #[arg(long)]
    collateral: Option<PathBuf>,
    /// The TD's event log (TDX; the CCEL log area): replayed against the quote's RTMRs, and
    /// its events listed on acceptance.
    #[arg(long)]
    event_log: Option<PathBuf>,
    /// Verification time, RFC 3339 (default: now).
    #[arg(long)]
    at: Option<String>,
    /// Policy file (TOML). Default: authenticity checks plus the default policy.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Expected REPORT_DATA, 128 hex digits; without it REPORT_DATA is not checked (warned).
    #[arg(long)]
    expect_report_data: Option<String>,
    /// Accept SNP/sim evidence without the ARK's CRL (revocation unchecked; warned).
    #[arg(long)]
    allow_missing_crl: bool,
    /// Trust this simulated ARK (PEM or DER) for --tee sim. INSECURE.
    #[arg(long)]
    insecure_sim_root: Option<PathBuf>,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum SimCmd {
    /// Manage the simulated certificate authority.
    #[command(subcommand)]
    Ca(SimCaCmd),
    /// Sign an SNP-format report with a simulated VCEK.
    Report(sim::ReportArgs),
}

#[derive(Subcommand, Debug)]
enum SimCaCmd {
    /// Create ARK → ASK → VCEK (or ASVK → VLEK) and a CRL in DIR.
    Init(sim::InitArgs),
}

fn main() -> ExitCode {
    use std::io::IsTerminal;
    let cli = Cli::parse();
    // Services log what they do (info); one-shot tools only warnings. NACRE_LOG overrides.
    let default = if matches!(
        cli.command,
        Command::Attestation(attestation::AttestationCmd::Serve { .. })
            | Command::Host(host::HostCmd::Serve { .. })
            | Command::Witness(witness::WitnessCmd::Serve { .. })
    ) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("NACRE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    if cli.log_json {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).without_time().init();
    }
    let result = match cli.command {
        Command::Evidence(EvidenceCmd::Verify(args)) => evidence::verify(args),
        Command::Evidence(EvidenceCmd::Show { tee, file, event_log }) => {
            evidence::show(tee, &file, event_log.as_deref())
        }
        Command::Sim(SimCmd::Ca(SimCaCmd::Init(args))) => sim::init(args),
        Command::Sim(SimCmd::Report(args)) => sim::report(args),
        Command::Attestation(cmd) => attestation::attestation(cmd),
        Command::Witness(cmd) => witness::witness(cmd),
        Command::Audit(cmd) => attestation::audit(cmd),
        Command::Measure(cmd) => image::measure(cmd),
        Command::Image(cmd) => image::image(cmd),
        Command::Host(cmd) => host::host(cmd),
        Command::Seal(args) => seal::seal(args),
        Command::Verify(args) => client::verify(args),
        Command::Infer(args) => client::infer(args),
        Command::Explain(args) => client::explain(args),
        Command::Monitor(args) => monitor::monitor(args),
        Command::Proxy(args) => client::proxy(args),
        Command::Unseal(args) => seal::unseal(args),
        Command::Model(ModelCmd::Digest(args)) => seal::digest(args),
        Command::Guard(cmd) => guard::guard(cmd),
        Command::Doctor(args) => doctor::doctor(args),
        Command::Model(ModelCmd::Sample { out }) => std::fs::write(&out, nacre_model::sample::mlp_onnx())
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display())),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
