//! `nacre-enclave`: the guest runtime, started by the image's init.
//!
//! So far: the attesters and a self-test mode for the image and host-agent tests
//! (`nacre.selftest=report:HEX` on the measured command line asks the secure processor for a
//! report binding those 64 bytes and prints it on the console). Key release, unsealing and
//! serving follow (the "Enclave runtime" issue).
#![forbid(unsafe_code)]

mod attest;
mod config;
mod lifecycle;
mod serve;
mod unlock;

use std::process::ExitCode;

use attest::Attester;

fn cmdline_value(cmdline: &str, key: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')).map(str::to_owned))
}

/// Asks for a report every two seconds, forever, and prints each on the console; the host's
/// tests read them (and see the secure processor come back after an agent restart).
fn selftest(spec: &str) -> Result<(), String> {
    let hex_rd = spec.strip_prefix("report:").ok_or_else(|| format!("unknown self-test {spec:?}"))?;
    let mut rd = [0u8; 64];
    hex::decode_to_slice(hex_rd, &mut rd).map_err(|e| format!("report data: {e}"))?;
    let mut attester = None;
    loop {
        let result = match attester.take() {
            Some(a) => Ok(a),
            None => attest::sim::SimAttester::open(),
        }
        .and_then(|mut a| a.attest(&rd).map(|ev| (a, ev)));
        match result {
            Ok((a, evidence)) => {
                let mut out = format!("NACRE-SELFTEST-REPORT {}\n", hex::encode(&evidence.report));
                for c in &evidence.certs {
                    out.push_str(&format!("NACRE-SELFTEST-CERT {}\n", hex::encode(c)));
                }
                out.push_str("NACRE-SELFTEST-DONE\n");
                print!("{out}");
                attester = Some(a);
            }
            Err(e) => println!("NACRE-SELFTEST-FAILED {e}"),
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

fn main() -> ExitCode {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if let Some(spec) = cmdline_value(&cmdline, "nacre.selftest") {
        return match selftest(&spec) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                println!("NACRE-SELFTEST-FAILED {e}");
                ExitCode::from(1)
            }
        };
    }
    eprintln!("nacre-enclave: serving is not built yet (see the Enclave runtime issue)");
    ExitCode::from(2)
}
