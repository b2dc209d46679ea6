//! `nacre sim ca init` and `nacre sim report`: the simulated TEE's keys and reports.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use nacre_sim::{SimCa, SimParams, SimSigner, report_template};
use nacre_wire::snp::{Product, SigningKey, policy_bits};

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum ProductArg {
    Milan,
    Genoa,
    Turin,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Directory for ark.pem, ask.pem/asvk.pem, vcek.pem/vlek.pem, crl.pem, the keys and sim.toml.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "milan")]
    product: ProductArg,
    /// Issue a VLEK (via an ASVK) instead of a VCEK.
    #[arg(long)]
    vlek: bool,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Directory written by `nacre sim ca init`.
    #[arg(long)]
    ca: PathBuf,
    /// Where to write the 1184-byte report.
    #[arg(long)]
    out: PathBuf,
    /// REPORT_DATA, 128 hex digits (default zeros).
    #[arg(long)]
    report_data: Option<String>,
    /// MEASUREMENT, 96 hex digits (default zeros).
    #[arg(long)]
    measurement: Option<String>,
    /// HOST_DATA, 64 hex digits (default zeros).
    #[arg(long)]
    host_data: Option<String>,
    /// Set the guest policy's DEBUG bit.
    #[arg(long)]
    debug: bool,
    #[arg(long, default_value_t = 0)]
    vmpl: u32,
}

pub fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let mut params = SimParams::new(time::OffsetDateTime::now_utc());
    params.product = match args.product {
        ProductArg::Milan => Product::Milan,
        ProductArg::Genoa => Product::Genoa,
        ProductArg::Turin => Product::Turin,
    };
    if args.vlek {
        params.key = SigningKey::Vlek;
    }
    let ca = SimCa::generate(params)?;
    ca.write_to(&args.out)?;
    eprintln!(
        "warning: created an INSECURE simulated SEV-SNP hierarchy in {}; anyone with these keys can forge reports",
        args.out.display()
    );
    println!("{}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn hex_arg<const N: usize>(name: &str, v: Option<&str>) -> anyhow::Result<[u8; N]> {
    let mut out = [0u8; N];
    if let Some(h) = v {
        hex::decode_to_slice(h.trim(), &mut out)
            .with_context(|| format!("--{name} must be {} hex digits", 2 * N))?;
    }
    Ok(out)
}

pub fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let signer = SimSigner::load(&args.ca)?;
    let chip = signer.chip().context("the CA directory has no sim.toml")?;
    let mut r = report_template(chip);
    r.report_data = hex_arg("report-data", args.report_data.as_deref())?;
    r.measurement = hex_arg("measurement", args.measurement.as_deref())?;
    r.host_data = hex_arg("host-data", args.host_data.as_deref())?;
    r.vmpl = args.vmpl;
    if args.debug {
        r.policy |= policy_bits::DEBUG;
    }
    let bytes = signer.sign(&r)?;
    std::fs::write(&args.out, bytes).with_context(|| format!("writing {}", args.out.display()))?;
    Ok(ExitCode::SUCCESS)
}
