//! The simulated secure processor (DESIGN.md §9): answers a sim guest's report requests on
//! its virtio-serial port (a Unix socket QEMU connects to). MEASUREMENT is the sim digest of
//! what the agent booted, HOST_DATA comes from the launch, CHIP_ID is the sim CA's obviously
//! fake one, and the report is signed by the sim VCEK and sent with its chain and CRL.
//!
//! The guest is untrusted: requests are fixed-size and strictly parsed; a malformed one gets
//! a refusal and the connection is closed (the stream cannot be resynchronised; QEMU
//! reconnects); a started request must complete within a deadline; reports are rate-limited.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::path::Path;

use nacre_sim::{SimChip, SimSigner};
use nacre_wire::sp::{REQUEST_LEN, decode_request, encode_refusal, encode_report};
use nacre_wire::{Evidence, Tee};
use serde_bytes::ByteBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Time allowed between the first and the last byte of a request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Reports per second per VM (a sim signature costs about a millisecond).
const REPORTS_PER_SECOND: u32 = 50;

/// The sim chip: its endorsement key and the certificates and CRL sent with every report,
/// loaded from a directory written by `nacre sim ca init`.
#[derive(Debug)]
pub struct SimIdentity {
    signer: SimSigner,
    chip: SimChip,
    /// DER: ARK, ASK (or ASVK), VCEK (or VLEK), CRL.
    certs: Vec<Vec<u8>>,
}

impl SimIdentity {
    pub fn load(dir: &Path) -> Result<Self, String> {
        let signer = SimSigner::load(dir).map_err(|e| e.to_string())?;
        let chip = signer.chip().cloned().ok_or_else(|| "the sim key has no chip description".to_owned())?;
        let mut certs = Vec::new();
        for names in [&["ark.pem"][..], &["ask.pem", "asvk.pem"], &["vcek.pem", "vlek.pem"], &["crl.pem"]] {
            let path = names
                .iter()
                .map(|n| dir.join(n))
                .find(|p| p.exists())
                .ok_or_else(|| format!("{}: no {}", dir.display(), names.join(" or ")))?;
            let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let block = pem::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            certs.push(block.into_contents());
        }
        Ok(SimIdentity { signer, chip, certs })
    }
}

pub struct SecureProcessor {
    identity: Arc<SimIdentity>,
    measurement: [u8; 48],
    host_data: [u8; 32],
    /// Reports in the current one-second window, shared by every connection: a guest that
    /// forces a reconnect (a malformed request closes the connection) gets no fresh allowance.
    window: std::sync::Mutex<(Instant, u32)>,
}

impl core::fmt::Debug for SecureProcessor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SecureProcessor").field("measurement", &hex::encode(self.measurement)).finish()
    }
}

impl SecureProcessor {
    pub fn new(identity: Arc<SimIdentity>, measurement: [u8; 48], host_data: [u8; 32]) -> Self {
        SecureProcessor {
            identity,
            measurement,
            host_data,
            window: std::sync::Mutex::new((Instant::now(), 0)),
        }
    }

    /// A signed report binding `report_data`, with the certificate chain and CRL.
    pub fn report(&self, report_data: [u8; 64]) -> Result<Evidence, String> {
        let mut report = nacre_sim::report_template(&self.identity.chip);
        report.report_data = report_data;
        report.measurement = self.measurement;
        report.host_data = self.host_data;
        let signed = self.identity.signer.sign(&report).map_err(|e| e.to_string())?;
        let certs = self.identity.certs.iter().map(|c| ByteBuf::from(c.clone())).collect();
        Ok(Evidence { tee: Tee::Sim, report: signed.to_vec(), certs, event_log: None })
    }

    /// Serves every connection on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: UnixListener, vm: String) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let sp = self.clone();
                    let vm = vm.clone();
                    tokio::spawn(async move {
                        if let Err(e) = sp.connection(stream).await {
                            tracing::warn!(%vm, error = %e, "secure processor: connection closed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(%vm, error = %e, "secure processor: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn connection(&self, mut stream: UnixStream) -> Result<(), String> {
        loop {
            let mut req = [0u8; REQUEST_LEN];
            // Idle is fine (the port stays connected for the VM's life); a begun request is not.
            match stream.read(&mut req[..1]).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
            tokio::time::timeout(REQUEST_DEADLINE, stream.read_exact(&mut req[1..]))
                .await
                .map_err(|_| "request not completed within 5 s".to_owned())?
                .map_err(|e| e.to_string())?;
            let over_limit = {
                let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
                if w.0.elapsed() >= Duration::from_secs(1) {
                    *w = (Instant::now(), 0);
                }
                w.1 += 1;
                w.1 > REPORTS_PER_SECOND
            };
            let reply = match decode_request(&req) {
                Err(e) => {
                    let _ =
                        stream.write_all(&encode_refusal(&e.to_string()).map_err(|e| e.to_string())?).await;
                    return Err(format!("malformed request: {e}"));
                }
                Ok(_) if over_limit => encode_refusal("rate limited: at most 50 reports per second"),
                Ok(rd) => match self.report(rd) {
                    Ok(ev) => encode_report(&ev),
                    Err(e) => encode_refusal(&format!("signing failed: {e}")),
                },
            }
            .map_err(|e| e.to_string())?;
            stream.write_all(&reply).await.map_err(|e| e.to_string())?;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use nacre_wire::sp::{
        RESPONSE_HEADER_LEN, Response, decode_response_body, decode_response_header, encode_request,
    };

    async fn exchange(stream: &mut UnixStream, req: &[u8]) -> Response {
        stream.write_all(req).await.unwrap();
        let mut h = [0u8; RESPONSE_HEADER_LEN];
        stream.read_exact(&mut h).await.unwrap();
        let (status, len) = decode_response_header(&h).unwrap();
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await.unwrap();
        decode_response_body(status, &body).unwrap()
    }

    #[tokio::test]
    async fn answers_reports_and_refuses_garbage() {
        let ca =
            nacre_sim::SimCa::generate(nacre_sim::SimParams::new(time::OffsetDateTime::now_utc())).unwrap();
        let dir = std::env::temp_dir().join(format!("nacre-sp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        ca.write_to(&dir.join("ca")).unwrap();
        let identity = Arc::new(SimIdentity::load(&dir.join("ca")).unwrap());
        let sp = Arc::new(SecureProcessor::new(identity, [0x11; 48], [0x22; 32]));
        let listener = UnixListener::bind(dir.join("sp.sock")).unwrap();
        tokio::spawn(sp.clone().serve(listener, "t".into()));

        let mut s = UnixStream::connect(dir.join("sp.sock")).await.unwrap();
        let Response::Report(ev) = exchange(&mut s, &encode_request(&[0x33; 64])).await else {
            panic!("refused")
        };
        let report = nacre_wire::snp::SnpReport::parse(&ev.report).unwrap().report;
        assert_eq!(report.report_data, [0x33; 64]);
        assert_eq!(report.measurement, [0x11; 48]);
        assert_eq!(report.host_data, [0x22; 32]);
        assert!(report.chip_id.starts_with(b"NACRE-SIM"));
        assert_eq!(ev.certs.len(), 4, "ARK, ASK, VCEK and the CRL");

        // A bad magic is refused and the connection closed.
        let mut bad = encode_request(&[0; 64]);
        bad[0] = b'X';
        assert!(matches!(exchange(&mut s, &bad).await, Response::Refused(r) if r.contains("magic")));
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).await.unwrap(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
