//! `nacre-enclave`: the guest runtime, started by the image's init as
//! `nacre-enclave --config /etc/nacre/enclave.toml` (a file inside the measured initrd).
//!
//! It listens at once (health only), then walks the lifecycle — attester → key release →
//! unseal → tract → attested certificate — and serves the model. A failure is printed on the
//! console as `NACRE-ENCLAVE-FAILED <reason>`, shown by `/v2/health/ready`, and retried after
//! an exponential backoff (1 s … 5 min), never in a tight loop. Once serving, the attested
//! certificate is renewed at half-life (`serve::renew`).
//!
//! `nacre.selftest=report:HEX` on the measured command line instead asks the secure processor
//! for reports binding those 64 bytes and prints them (the image and host-agent tests).
#![forbid(unsafe_code)]

mod attest;
mod clock;
mod config;
mod lifecycle;
mod serve;
mod signature;
mod unlock;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use attest::{AttestError, Attester};
use config::{EnclaveConfig, TeeKind};
use lifecycle::{Booted, Failure, Serving};
use serve::renew::Schedule;
use serve::{App, Ready};

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

type BoxedAttester = Box<dyn Attester + Send>;

fn open_attester(config: &EnclaveConfig) -> Result<BoxedAttester, AttestError> {
    // An attester counts once it has answered: one report proves it works before anything
    // depends on it (configfs-tsm can exist without a provider behind it, a device without a
    // reachable QGS).
    fn answering(mut attester: BoxedAttester) -> Result<BoxedAttester, AttestError> {
        attester.attest(&[0u8; 64])?;
        Ok(attester)
    }
    // SNP: the kernel's configfs-tsm first (Linux ≥ 6.7), else the guest device.
    fn hardware(
        tee: nacre_wire::Tee,
        device: &'static str,
        open_device: fn() -> Result<BoxedAttester, AttestError>,
    ) -> Result<BoxedAttester, AttestError> {
        let tsm = attest::tsm::TsmAttester::open(std::path::Path::new(attest::tsm::ROOT), tee)
            .and_then(|a| answering(Box::new(a)));
        tsm.or_else(|tsm| {
            open_device().and_then(answering).map_err(|device_error| AttestError::Unavailable {
                tsm: Box::new(tsm),
                device,
                device_error: Box::new(device_error),
            })
        })
    }
    match (config.tee, &config.sim_socket) {
        (TeeKind::Sim, Some(socket)) => answering(Box::new(attest::sim::SimAttester::connect(socket)?)),
        (TeeKind::Sim, None) => answering(Box::new(attest::sim::SimAttester::open()?)),
        (TeeKind::Snp, _) => hardware(nacre_wire::Tee::Snp, nacre_guest_ioctl::sev::DEVICE, || {
            Ok(Box::new(attest::sev_guest::SevGuestAttester::open()?))
        }),
        // TDX: configfs-tsm only. The TD's quote request goes through the kernel to QEMU's
        // quote-generation socket; the image has no vsock driver and the launch no guest vsock
        // device, so a `/dev/tdx_guest` + vsock fallback could never answer (it was removed).
        (TeeKind::Tdx, _) => {
            attest::tsm::TsmAttester::open(std::path::Path::new(attest::tsm::ROOT), nacre_wire::Tee::Tdx)
                .and_then(|a| answering(Box::new(a)))
        }
    }
}

/// Boot → attest → release the key and open the model → attested certificate → serve.
fn start(config: EnclaveConfig, app: &App) -> Result<Serving<Schedule>, Failure> {
    let t0 = std::time::Instant::now();
    let stage = |name: &str| println!("NACRE-ENCLAVE-STAGE {name} {:.3}", t0.elapsed().as_secs_f64());
    let attested = Booted::new(config).attest(open_attester)?;
    stage("attested");
    let released = attested.release_key(|config, attester| {
        let unlocked = unlock::unlock(config, attester.as_mut(), &|s| stage(s))?;
        let result = unlocked.attestation_result.clone();
        Ok((unlocked, result))
    })?;
    stage("model-ready");
    released.serve(|r| {
        let header = &r.model.header;
        let metadata = Ready::metadata(&r.model.model, &header.model_name, &header.model_version)?;
        let guard = match (r.model.guard, &header.guard_manifest) {
            (Some(m), Some(bytes)) => Some(app.guard(bytes.clone(), m, &metadata)?),
            _ => None,
        };
        let schedule = app.serve_model(Ready {
            model: r.model.model,
            metadata,
            binding: nacre_wire::binding::ModelBinding {
                model_identity: header.model_identity,
                guard_digest: header.guard_digest(),
                release_key_digest: r.model.release_key_digest,
            },
            attester: Mutex::new(r.attester),
            attestation_result: r.attestation_result,
            guard,
            release_log: r
                .model
                .log
                .as_ref()
                .and_then(serve::release_log::ReleaseLogProof::new)
                .map(Arc::new),
        })?;
        stage("certificate");
        Ok(schedule)
    })
}

/// Keeps the key, the plaintext model and tract's copy of the weights out of swap: every page
/// mapped now or later is locked once touched. Not for the host-process mode (`sim_socket`),
/// which shares a machine with other work.
fn lock_memory(config: &EnclaveConfig) {
    use rustix::mm::{MlockAllFlags, mlockall};
    if config.sim_socket.is_some() {
        return;
    }
    if let Err(e) = mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT) {
        println!("NACRE-ENCLAVE-WARNING memory is not locked (mlockall: {e}); pages could be swapped");
    }
}

fn run(config: EnclaveConfig) -> Result<(), String> {
    lock_memory(&config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let app = App::new(&config, Arc::new(clock::SystemClock))?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(config.listen))
        .map_err(|e| format!("listening on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("NACRE-ENCLAVE-LISTENING {addr}");
    rt.spawn(serve::serve(app.clone(), listener));
    let mut attempt = 0;
    loop {
        match start(config.clone(), &app) {
            Ok(serving) => {
                println!("NACRE-ENCLAVE-SERVING {addr}");
                rt.spawn(serve::renew::run(app.clone(), serving.into_server()));
                if let Some(proof) = app.release_log() {
                    // The service's CA was read at key release; read again, it is the same file.
                    match std::fs::read(&config.service_ca) {
                        Ok(ca) => {
                            drop(rt.spawn(serve::release_log::follow(proof, config.service_url.clone(), ca)))
                        }
                        Err(e) => println!(
                            "NACRE-ENCLAVE-WARNING release log: {}: {e}",
                            config.service_ca.display()
                        ),
                    }
                }
                // The server runs on the runtime's threads until the guest powers off.
                rt.block_on(std::future::pending::<()>());
            }
            Err(failure) => {
                let delay = lifecycle::backoff(attempt);
                println!("NACRE-ENCLAVE-FAILED {failure} (retrying in {} s)", delay.as_secs());
                app.fail(&failure);
                std::thread::sleep(delay);
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

fn main() -> ExitCode {
    // Before any thread starts: request tensors of 1 MiB and more are their own mappings, given
    // back on free, so the configured bounds bound the RSS (see `nacre_guest_ioctl::malloc`).
    if !nacre_guest_ioctl::malloc::fix_mmap_threshold(1 << 20) {
        eprintln!("nacre-enclave: the allocator refused a fixed mmap threshold; memory is not bounded");
    }
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = match args.as_slice() {
        [] => config::CONFIG_PATH.to_owned(),
        [flag, path] if flag == "--config" => path.clone(),
        _ => {
            eprintln!("usage: nacre-enclave [--config FILE]");
            return ExitCode::from(2);
        }
    };
    let config = match std::fs::read_to_string(&path)
        .map_err(|e| format!("{path}: {e}"))
        .and_then(|text| EnclaveConfig::parse(&text).map_err(|e| format!("{path}: {e}")))
    {
        Ok(c) => c,
        Err(e) => {
            println!("NACRE-ENCLAVE-FAILED {e}");
            return ExitCode::from(2);
        }
    };
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("NACRE-ENCLAVE-FAILED {e}");
            ExitCode::from(1)
        }
    }
}
